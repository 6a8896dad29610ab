"""Benchmarks of pixel-lightning: ``python -m benchmarks.NAME`` from the repository root (README.md here)."""
