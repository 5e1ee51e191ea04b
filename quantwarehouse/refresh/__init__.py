"""The machinery of `orchestrate.py daily-refresh` (quantwarehouse/commands/daily_refresh.py):

- `config`: configs/refresh.yml (the source `--all` ingests from, thresholds), validated;
- `filters`: `--tfs`, `--periods`, `--tf-period-combos` against the dbt vars;
- `state`: what the state tables say (pending symbols, staleness, fingerprints, per-symbol reset);
- `steps`: ingest, dbt builds (with per-symbol isolation of failures), quality gates, publishing;
- `runner`: the run (lock, progress, run manifest and stage cache, summary, alerts, exit status);
- `summary`: the end-of-run summary.
"""
