"""`orchestrate.py scan`: run the scanners in configs/scanners/ (implemented with the scanners)."""
