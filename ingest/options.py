"""Options of `orchestrate.py ingest`, shared by every source."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

# `-200d`: 200 days before a reference day (`until`), so that a daily run loads a bounded window.
DAYS_BEFORE = re.compile(r"-(\d+)d")


def days_before(text: str, reference: date) -> date | None:
    """The day `-Nd` names: N days before `reference`; None when `text` is not of that form.
    Raises OverflowError when that day would be before the year 1."""
    relative = DAYS_BEFORE.fullmatch(text)
    if relative is None:
        return None
    return reference - timedelta(days=int(relative.group(1)))


@dataclass(frozen=True)
class IngestOptions:
    """What the user asked for; each source reads the fields that apply to it."""

    symbols: tuple[str, ...] = ()
    interval: str | None = None
    start: date | None = None
    end: date | None = None
    path: Path | None = None
    base_url: str | None = None
    preset: str | None = None
    until: date | None = None
    seed: int | None = None
    force: bool = False
    freshness_hours: float | None = None
    workers: int = 4
    mapping: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
