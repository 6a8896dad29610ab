"""Tools over finished runs and batches of runs: ``report`` (tables and curves) and ``sweep`` (a grid)."""
