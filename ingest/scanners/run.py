"""Running scanners: universe, filters, sort and limit over the fields, then the outputs.

Each scanner's candidates go to `data/export/<run_id>/<scanner>.json` and to the warehouse table
`main.scan_candidates` (one row per candidate, appended per run). Running the same run id again
replaces that run's rows and files, so a rerun after a crash ends in the same state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from ingest.raw_store import utc_now
from ingest.scanners.config import ScannerConfig
from ingest.scanners.fields import (
    ScannerInputError,
    latest_bar_date,
    require_inputs,
    scanner_fields,
    symbols_without_metadata,
)

log = logging.getLogger(__name__)

CANDIDATES_TABLE = "main.scan_candidates"
CANDIDATES_DDL = f"""
create table if not exists {CANDIDATES_TABLE} (
    run_id varchar not null,
    scanner varchar not null,
    intent varchar not null,
    as_of date not null,
    rank integer not null,
    symbol varchar not null,
    fields json not null,
    created_at timestamp not null
)
"""


@dataclass(frozen=True)
class Candidates:
    """A scanner's result: the ranked candidates and how many symbols each stage kept."""

    frame: pd.DataFrame
    in_universe: int
    passed_filters: int


@dataclass(frozen=True)
class ScanOutcome:
    scanner: str
    intent: str
    status: str
    candidates: int = 0
    in_universe: int = 0
    passed_filters: int = 0
    reason: str | None = None
    output: Path | None = None

    def line(self) -> str:
        if self.status != "ok":
            return f"  {self.scanner} ({self.intent}): {self.status}: {self.reason}"
        return (
            f"  {self.scanner} ({self.intent}): {self.candidates} candidates "
            f"(universe {self.in_universe}, after filters {self.passed_filters}) -> {self.output}"
        )


def select_candidates(scanner: ScannerConfig, fields: pd.DataFrame) -> Candidates:
    """Universe minimums, then filters, then sort (ties by symbol) and limit; ranks from 1."""
    in_universe = fields[scanner.universe.mask(fields)]
    keep = pd.Series(True, index=in_universe.index)
    for condition in scanner.filters:
        keep &= condition.mask(in_universe[condition.field])
    passed = in_universe[keep]
    ranked = passed.sort_values(
        [scanner.sort.field, "symbol"],
        ascending=[scanner.sort.ascending, True],
        na_position="last",
        kind="mergesort",
    )
    if scanner.limit is not None:
        ranked = ranked.head(scanner.limit)
    ranked = ranked[["symbol", *scanner.fields_used()]].reset_index(drop=True)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return Candidates(frame=ranked, in_universe=len(in_universe), passed_filters=len(passed))


def _json_number(value: object) -> object:
    """Numbers as JSON can hold them: NaN becomes null, numpy scalars plain Python."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def candidate_records(candidates: pd.DataFrame, scanner: ScannerConfig) -> list[dict[str, object]]:
    return [
        {
            "rank": int(row["rank"]),
            "symbol": row["symbol"],
            "fields": {field: _json_number(row[field]) for field in scanner.fields_used()},
        }
        for row in candidates.to_dict("records")
    ]


def scanner_document(
    scanner: ScannerConfig,
    records: list[dict[str, object]],
    found: Candidates,
    as_of: date,
    run_id: str,
) -> dict[str, object]:
    u = scanner.universe
    return {
        "scanner": scanner.name,
        "description": scanner.description,
        "intent": scanner.intent,
        "as_of": as_of.isoformat(),
        "run_id": run_id,
        "generated_at": utc_now().isoformat(timespec="seconds") + "Z",
        "config": str(scanner.path),
        "universe": {
            "exchange": u.exchange,
            "quote_assets": list(u.quote_assets),
            "min_traded_value": u.min_traded_value,
            "min_volatility": u.min_volatility,
            "min_listing_age_days": u.min_listing_age_days,
            "window_days": u.window_days,
        },
        "filters": [f.describe() for f in scanner.filters],
        "sort": {"field": scanner.sort.field, "direction": scanner.sort.direction},
        "limit": scanner.limit,
        "counts": {
            "in_universe": found.in_universe,
            "passed_filters": found.passed_filters,
            "candidates": len(records),
        },
        "fields": scanner.fields_used(),
        "candidates": records,
    }


def write_json_atomically(path: Path, document: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(document, out, indent=2)
        out.write("\n")
    os.replace(temporary, path)


def store_candidates(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    scanner: ScannerConfig,
    as_of: date,
    records: list[dict[str, object]],
) -> None:
    """Replace this run's rows for the scanner, in one transaction."""
    con.execute(CANDIDATES_DDL)
    created_at = utc_now()
    rows = [
        [
            run_id,
            scanner.name,
            scanner.intent,
            as_of,
            r["rank"],
            r["symbol"],
            json.dumps(r["fields"]),
            created_at,
        ]
        for r in records
    ]
    con.execute("begin transaction")
    try:
        con.execute(
            f"delete from {CANDIDATES_TABLE} where run_id = ? and scanner = ?",
            [run_id, scanner.name],
        )
        if rows:
            con.executemany(f"insert into {CANDIDATES_TABLE} values (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def run_scanner(
    con: duckdb.DuckDBPyConnection,
    scanner: ScannerConfig,
    as_of: date,
    run_id: str,
    export_folder: Path,
) -> ScanOutcome:
    """Run one scanner; a missing input makes it fail with the reason, not the whole scan."""
    try:
        found = select_candidates(scanner, scanner_fields(con, scanner, as_of))
    except ScannerInputError as exc:
        return ScanOutcome(scanner.name, scanner.intent, "failed", reason=str(exc))
    records = candidate_records(found.frame, scanner)
    output = export_folder / run_id / f"{scanner.name}.json"
    write_json_atomically(output, scanner_document(scanner, records, found, as_of, run_id))
    store_candidates(con, run_id, scanner, as_of, records)
    return ScanOutcome(
        scanner.name,
        scanner.intent,
        "ok",
        candidates=len(records),
        in_universe=found.in_universe,
        passed_filters=found.passed_filters,
        output=output,
    )


@dataclass(frozen=True)
class ScanReport:
    run_id: str
    as_of: date | None
    outcomes: list[ScanOutcome]
    without_metadata: list[str]

    @property
    def ok(self) -> bool:
        return all(outcome.status == "ok" for outcome in self.outcomes)

    def lines(self) -> list[str]:
        failed = sum(1 for o in self.outcomes if o.status != "ok")
        out = [
            f"scan run {self.run_id} as of {self.as_of or 'unknown'}: "
            f"{len(self.outcomes) - failed} scanners ok, {failed} failed",
            *(outcome.line() for outcome in self.outcomes),
        ]
        if self.without_metadata:
            shown = ", ".join(self.without_metadata[:10])
            hidden = len(self.without_metadata) - 10
            more = f" and {hidden} more" if hidden > 0 else ""
            out.append(
                f"  {len(self.without_metadata)} symbols have bars but no exchange metadata in "
                f"main.dim_symbols, so no universe holds them: {shown}{more}"
            )
        first_failure = next((o for o in self.outcomes if o.status != "ok"), None)
        if first_failure is not None:
            out.append(
                f"error: {failed} of {len(self.outcomes)} scanners failed; "
                f"{first_failure.scanner}: {first_failure.reason}"
            )
        return out


def run_scan(
    con: duckdb.DuckDBPyConnection,
    scanners: list[ScannerConfig],
    *,
    run_id: str,
    export_folder: Path,
    as_of: date | None = None,
) -> ScanReport:
    """Run every scanner as of `as_of` (default: the latest bar date in the warehouse)."""
    try:
        require_inputs(con)
        as_of = as_of or latest_bar_date(con)
    except ScannerInputError as exc:
        failed = [ScanOutcome(s.name, s.intent, "failed", reason=str(exc)) for s in scanners]
        return ScanReport(run_id, as_of, failed, [])
    outcomes = []
    for done, scanner in enumerate(scanners, start=1):
        outcome = run_scanner(con, scanner, as_of, run_id, export_folder)
        log.info("scan %d/%d %s: %s", done, len(scanners), scanner.name, outcome.status)
        outcomes.append(outcome)
    return ScanReport(run_id, as_of, outcomes, symbols_without_metadata(con, as_of))
