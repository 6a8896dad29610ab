"""Maintainer scripts (docs/RESULTS.md figures, the paper-scale estimate): ``python -m scripts.NAME`` from the
repository root."""
