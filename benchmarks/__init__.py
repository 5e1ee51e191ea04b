"""Benchmarks: `python -m benchmarks.run` (or `make bench`) runs every case and prints a table."""
