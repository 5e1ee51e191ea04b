"""Run ids: generated, or given by the user and validated (they name folders)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def new_run_id(suffix: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tail = f"_{suffix}" if suffix else ""
    return f"{stamp}_{secrets.token_hex(3)}{tail}"


def validate_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise ValueError(
            f"--run-id: {run_id!r} is not a valid run id; use letters, digits, '_', '-' and '.' "
            "(no path separators, no '..', at most 128 characters)"
        )
    return run_id
