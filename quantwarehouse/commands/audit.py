"""`orchestrate.py audit verify <run_dir>`: check a run's hash-chained audit trail."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantwarehouse.paths import runs_dir
from quantwarehouse.production import AUDIT_FILE, outcome_counts
from quantwarehouse.sleeves.audit import read_records, verify_audit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="check the audit trail of a sleeve run",
        description="Audit trails (audit.jsonl) of sleeve production runs.",
    )
    actions = parser.add_subparsers(dest="audit_action", metavar="<action>", required=True)
    verify = actions.add_parser(
        "verify",
        help="verify a run's audit.jsonl",
        description=(
            "Recompute every record's hash and chain link (prev_hash), its sequence number and "
            "the order of the records (genesis first, an intent before each outcome, a close "
            "record last). Exit status 0 when the chain verifies, 1 naming the first bad line."
        ),
    )
    verify.add_argument(
        "run",
        help="run directory (data/runs/<run_id>), its audit.jsonl, or a run id under data/runs",
    )
    verify.set_defaults(handler=run)


def audit_file(target: str) -> Path:
    """The audit.jsonl of a run directory, a file path or a run id (checked in that order)."""
    path = Path(target)
    candidates = [path / AUDIT_FILE, path] if path.is_dir() or path.suffix != ".jsonl" else [path]
    candidates.append(runs_dir() / target / AUDIT_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no audit trail for {target!r}: expected a run directory holding {AUDIT_FILE}, the "
        f"file itself, or a run id under {runs_dir()}"
    )


def run(args: argparse.Namespace) -> int:
    path = audit_file(args.run)
    ok, problems = verify_audit(path)
    if ok:
        records = read_records(path)
        outcomes = [r for r in records if r["kind"] == "outcome"]
        print(
            f"audit trail {path}: verified, {len(records)} records, chain intact (run "
            f"{records[0].get('run_id')}, closed {records[-1].get('status')}; step outcomes: "
            f"{outcome_counts(outcomes)})"
        )
        return 0
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    print(f"error: audit trail {path} does not verify: {problems[0]}", file=sys.stderr)
    return 1
