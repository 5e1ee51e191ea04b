"""`orchestrate.py daily-refresh` (implemented with the warehouse core)."""
