"""Data sources and the raw writer: everything that lands data in the warehouse's raw layer."""
