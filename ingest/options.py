"""Options of `orchestrate.py ingest`, shared by every source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path


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
