"""Daily log files under `.logs/`: one per command and day, the oldest removed after 30 days."""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from quantwarehouse.paths import logs_dir

RETENTION_DAYS = 30
SUMMARY_LOGGER = "quantwarehouse.summary"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def remove_old_logs(folder: Path, *, now: float | None = None) -> list[Path]:
    """Delete `*.log` files older than the retention period; return what was removed."""
    cutoff = (now if now is not None else time.time()) - RETENTION_DAYS * 86400
    removed = []
    for path in folder.glob("*.log"):
        if path.stat().st_mtime < cutoff:
            path.unlink()
            removed.append(path)
    return removed


def setup_logging(
    command: str, *, verbose: bool = False, quiet: bool = False, folder: Path | None = None
) -> Path:
    """Log to stdout and to `.logs/<command>-YYYY-MM-DD.log`; return the file's path."""
    folder = folder or logs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    remove_old_logs(folder)
    log_file = folder / f"{command}-{datetime.now(UTC):%Y-%m-%d}.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    threshold = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    # The summary and errors always reach the console, even with --quiet (for cron mail).
    console.addFilter(lambda r: r.levelno >= threshold or r.name == SUMMARY_LOGGER)
    root.addHandler(file_handler)
    root.addHandler(console)
    for noisy in ("urllib3", "matplotlib", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file


def log_summary(lines: list[str]) -> None:
    """The end-of-command summary: shown even with --quiet, and kept in the log file."""
    summary = logging.getLogger(SUMMARY_LOGGER)
    for line in lines:
        summary.info(line)
