"""The exception and warning every user-facing data problem is reported with."""


class DataError(ValueError):
    """A data problem the user can fix: the message names the problem and the fix (files, from where)."""


class DataWarning(UserWarning):
    """A data check that failed with ``strict=False`` (record counts, checksums): reported, not fatal."""
