"""audit.jsonl: an append-only, hash-chained record of a run (DOMAIN.md "audit.jsonl").

One JSON object per line. Every record has `seq` (0, 1, 2, ... = its line), `kind`, `at` (UTC),
`prev_hash` (the previous record's `hash`; 64 zeros for the first) and `hash` = sha256 of the
record's canonical JSON without its own `hash` (keys sorted, no spaces, ASCII). Kinds:

- `genesis` (first line only): run_id, profile, environment, config;
- `intent` before a step: step, params;
- `outcome` after it: step, status, inputs_hash, outputs_hash, metrics;
- `close` (last line of a finished run): status and the number of records before it.

`verify_audit` recomputes every hash and link: an edited line breaks its own hash, a removed or
reordered line breaks the chain (and `seq`), and removing lines from the end removes the `close`
record. A whole chain rewritten with fresh hashes is only caught against a head hash kept
elsewhere (`expected_head`, e.g. stored in the run's database).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from quantwarehouse.sleeves.jsonable import jsonable

GENESIS_PREV = "0" * 64
KINDS = ("genesis", "intent", "outcome", "close")
REPORTED_PACKAGES = ("pandas", "numpy", "scipy", "riskfolio-lib", "cvxpy", "duckdb", "dbt-core")


class AuditError(RuntimeError):
    """The audit trail cannot take this record (order of records, or a damaged file)."""


def canonical_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_hash(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON without its `hash` field."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def frame_hash(frame: pd.DataFrame | pd.Series) -> str:
    """A content hash of a frame: its values, index and column names (for inputs/outputs)."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    names = frame.columns if isinstance(frame, pd.DataFrame) else [frame.name]
    digest.update(canonical_json({"columns": [str(c) for c in names]}).encode("ascii"))
    return digest.hexdigest()


def environment_info() -> dict[str, Any]:
    """Python, platform and the versions of the packages the numbers depend on."""
    packages = {}
    for name in REPORTED_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
    }


class AuditTrail:
    """Appends records to `path`, continuing the chain of what is already there."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.seq = 0
        self.head = GENESIS_PREV
        self.open_steps: set[str] = set()
        self.closed = False
        if self.path.exists() and self.path.stat().st_size:
            self._resume()

    def _resume(self) -> None:
        ok, problems = verify_audit(self.path, require_close=False)
        if not ok:
            raise AuditError(f"{self.path}: cannot append to a damaged trail: {problems[0]}")
        for record in read_records(self.path):
            self._advance(record)

    def _advance(self, record: dict[str, Any]) -> None:
        self.seq = record["seq"] + 1
        self.head = record["hash"]
        if record["kind"] == "intent":
            self.open_steps.add(record["step"])
        elif record["kind"] == "outcome":
            self.open_steps.discard(record["step"])
        elif record["kind"] == "close":
            self.closed = True

    def _append(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise AuditError(f"{self.path}: the trail is closed; no record can follow")
        if (kind == "genesis") != (self.seq == 0):
            raise AuditError(f"{self.path}: the genesis record must be the first and only one")
        record = jsonable(
            {
                "seq": self.seq,
                "kind": kind,
                "at": datetime.now(UTC).isoformat(timespec="microseconds"),
                **fields,
                "prev_hash": self.head,
            }
        )
        record["hash"] = record_hash(record)
        with self.path.open("a", encoding="ascii") as out:
            out.write(canonical_json(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
        self._advance(record)
        return record

    def genesis(
        self, run_id: str, profile: str, environment: dict[str, Any], config: dict[str, Any]
    ) -> dict[str, Any]:
        return self._append(
            "genesis",
            {"run_id": run_id, "profile": profile, "environment": environment, "config": config},
        )

    def intent(self, step: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._append("intent", {"step": step, "params": params})

    def outcome(
        self,
        step: str,
        status: str,
        inputs_hash: str | None,
        outputs_hash: str | None,
        metrics: dict[str, Any],
    ) -> dict[str, Any]:
        if step not in self.open_steps:
            raise AuditError(f"{self.path}: outcome of step {step!r} without its intent")
        return self._append(
            "outcome",
            {
                "step": step,
                "status": status,
                "inputs_hash": inputs_hash,
                "outputs_hash": outputs_hash,
                "metrics": metrics,
            },
        )

    def close(self, status: str) -> dict[str, Any]:
        """Seal the trail: the last record, so that lines removed from the end are detected."""
        return self._append("close", {"status": status, "records": self.seq})


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="ascii").splitlines()]


def _check_record(
    number: int, record: Any, prev: str, open_steps: set[str]
) -> tuple[list[str], str]:
    """Problems of one parsed record given the previous hash; returns (problems, its hash)."""
    where = f"line {number}"
    if not isinstance(record, dict) or "hash" not in record:
        return [f"{where}: not an audit record"], prev
    problems = []
    if record_hash(record) != record["hash"]:
        problems.append(f"{where}: hash mismatch: the record was edited")
    if record.get("prev_hash") != prev:
        problems.append(
            f"{where}: prev_hash does not match the previous line's hash "
            "(a line was removed, inserted or reordered)"
        )
    if record.get("seq") != number - 1:
        problems.append(f"{where}: seq {record.get('seq')!r}, expected {number - 1}")
    kind = record.get("kind")
    if kind not in KINDS:
        problems.append(f"{where}: unknown kind {kind!r}")
    if (kind == "genesis") != (number == 1):
        problems.append(f"{where}: the genesis record must be the first line and only there")
    if kind == "intent":
        open_steps.add(record.get("step"))
    if kind == "outcome":
        if record.get("step") not in open_steps:
            problems.append(f"{where}: outcome of step {record.get('step')!r} without its intent")
        open_steps.discard(record.get("step"))
    return problems, record["hash"]


def verify_audit(
    path: Path, expected_head: str | None = None, require_close: bool = True
) -> tuple[bool, list[str]]:
    """(ok, problems): every line's hash, chain link, seq and kind order (module docstring)."""
    path = Path(path)
    if not path.is_file():
        return False, [f"{path}: no audit trail"]
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    if not lines:
        return False, [f"{path}: empty audit trail"]
    problems: list[str] = []
    prev, open_steps, last_kind = GENESIS_PREV, set(), None
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg})")
            continue
        found, prev = _check_record(number, record, prev, open_steps)
        problems += found
        last_kind = record.get("kind") if isinstance(record, dict) else None
        if last_kind == "close" and number != len(lines):
            problems.append(f"line {number}: records follow the close record")
    if require_close and last_kind != "close":
        problems.append(
            f"line {len(lines)}: the trail has no close record (the run did not finish, or lines "
            "were removed from the end)"
        )
    if expected_head is not None and prev != expected_head:
        problems.append(f"the last hash {prev} is not the expected head {expected_head}")
    return not problems, problems
