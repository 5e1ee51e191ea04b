"""Run manifests and the stage cache.

Each run of a long command keeps `data/runs/<run_id>/run_manifest.json`: the command, its
arguments, its status, and per stage its status, start and end, input hash, outputs and error,
with the stage's log lines beside it (`<stage>.log`). The file is rewritten after every change
of a stage, atomically (a temporary file, then a rename), so a reader, or a rerun after a crash,
always finds a whole manifest.

A manifest is an account of what a run did, not its progress: the state tables are the record of
progress (ARCHITECTURE invariant 4). The one thing read back from manifests is the stage cache:
when caching is on (`--cache` or `QWH_STAGE_CACHE=1`), a stage whose input hash equals that of a
stage that succeeded in an earlier run is skipped. The input hash covers everything the stage's
result depends on: the code of its models and macros, its parameters, and the data it reads and
writes (watermarks and state fingerprints), so an unchanged hash means an unchanged result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST_FILE = "run_manifest.json"
CACHE_ENV = "QWH_STAGE_CACHE"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

StageStatus = str  # pending | running | success | failed | skipped | cached


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def cache_enabled(flag: bool) -> bool:
    """`--cache`, or QWH_STAGE_CACHE set to 1/true/yes."""
    return flag or os.environ.get(CACHE_ENV, "").strip().lower() in ("1", "true", "yes")


def stage_file_name(stage: str) -> str:
    """A stage's name as a file name: `build bars` -> `build_bars`."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stage).strip("_") or "stage"


def hash_parts(parts: Iterable[object]) -> str:
    """A stable SHA-256 of JSON-able parts (dicts sorted by key)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def hash_files(paths: Iterable[Path], root: Path) -> str:
    """SHA-256 over the files' paths (relative to `root`) and contents, in path order."""
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\x00")
        digest.update(path.read_bytes())
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass
class StageRecord:
    name: str
    status: StageStatus = "pending"
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    input_hash: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log: str | None = None
    cached_from: str | None = None


@dataclass
class RunManifest:
    """The manifest of one run, written to `folder / run_manifest.json` on every change."""

    folder: Path
    run_id: str
    command: str
    arguments: list[str]
    status: str = "running"
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    error: str | None = None

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_FILE

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "arguments": self.arguments,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "stages": [asdict(stage) for stage in self.stages],
        }

    def write(self) -> None:
        write_json_atomic(self.path, self.to_json())

    def stage(self, name: str) -> StageRecord:
        for record in self.stages:
            if record.name == name:
                return record
        record = StageRecord(name)
        self.stages.append(record)
        return record

    def plan(self, names: Iterable[str]) -> None:
        """Record the stages the run intends to run, all pending."""
        for name in names:
            self.stage(name)
        self.write()

    def start(self, name: str, input_hash: str | None) -> StageRecord:
        record = self.stage(name)
        record.status, record.started_at, record.input_hash = "running", now_iso(), input_hash
        record.log = f"{stage_file_name(name)}.log"
        self.write()
        return record

    def finish(
        self,
        name: str,
        status: StageStatus,
        *,
        seconds: float | None = None,
        outputs: dict[str, Any] | None = None,
        error: str | None = None,
        cached_from: str | None = None,
    ) -> None:
        record = self.stage(name)
        record.status, record.finished_at, record.seconds = status, now_iso(), seconds
        record.outputs = outputs or {}
        record.error, record.cached_from = error, cached_from
        if record.started_at is None:
            record.started_at = record.finished_at
        self.write()

    def close(self, status: str, error: str | None = None) -> None:
        self.status, self.error, self.finished_at = status, error, now_iso()
        self.write()

    @contextmanager
    def stage_log(self, name: str) -> Iterator[Path]:
        """Copy every log record emitted meanwhile (DEBUG and up) to the stage's log file."""
        path = self.folder / f"{stage_file_name(name)}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield path
        finally:
            root.removeHandler(handler)
            handler.close()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file in the same folder, fsync it, and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A manifest's JSON, or None when it is missing or unreadable (a foreign file)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def past_manifests(runs_root: Path, command: str, *, exclude: str | None = None) -> list[dict]:
    """Manifests of earlier runs of `command`, newest first (run ids start with their time)."""
    if not runs_root.is_dir():
        return []
    found = []
    for folder in sorted(runs_root.iterdir(), reverse=True):
        if folder.name == exclude:
            continue
        payload = read_manifest(folder / MANIFEST_FILE)
        if payload is not None and payload.get("command") == command:
            found.append(payload)
    return found


def cached_stage(manifests: Iterable[dict], stage: str, input_hash: str) -> str | None:
    """The run id of the newest run where `stage` succeeded with this input hash, or None."""
    for payload in manifests:
        for record in payload.get("stages", []):
            if (
                record.get("name") == stage
                and record.get("input_hash") == input_hash
                and record.get("status") in ("success", "cached")
            ):
                return str(payload.get("run_id"))
    return None


def typical_seconds(manifests: Iterable[dict], stage: str) -> float | None:
    """How long `stage` took in the newest run where it succeeded (for time-left estimates)."""
    for payload in manifests:
        for record in payload.get("stages", []):
            if record.get("name") == stage and record.get("status") == "success":
                seconds = record.get("seconds")
                if isinstance(seconds, int | float):
                    return float(seconds)
    return None
