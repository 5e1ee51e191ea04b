"""Scanners: config-defined screens over the warehouse that list candidate symbols per run.

`config` reads and validates `configs/scanners/*.yml`, `fields` computes each symbol's scanner
fields point in time, `run` applies universe, filters, sort and limit and writes the results.
"""
