"""`orchestrate.py refresh-sleeves`: refresh the data once, then run the sleeves in parallel.

1. `orchestrate.py daily-refresh --all` in a subprocess: the one writer, before any sleeve reads
   (left out with --skip-refresh). If it fails, no sleeve runs.
2. One `orchestrate.py production --profile P --run-id <batch>_<P>` subprocess per profile, at
   most --parallel at once. Every run has its own run id, so its own directory data/runs/<run_id>/
   and its own dbt target and log folders; each reads the warehouse read-only. This command holds
   a reader lock across them, so a writer cannot slip in between the refresh and the last run:
   a concurrent daily-refresh fails at once, naming the runs that read.
3. A summary: per profile the run directory, how the run ended (the failing step named), and
   whether its audit trail verifies with every step's outcome a success.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from quantwarehouse.cli import CliError
from quantwarehouse.lock import ReaderLock
from quantwarehouse.logs import log_summary, setup_logging
from quantwarehouse.paths import REPO_ROOT, runs_dir, warehouse_path
from quantwarehouse.production import AUDIT_FILE, MANIFEST_FILE, outcome_counts, read_manifest
from quantwarehouse.runs import new_run_id, validate_run_id
from quantwarehouse.sleeves.audit import read_records, verify_audit
from quantwarehouse.sleeves.profiles import available_profiles, load_profile

log = logging.getLogger(__name__)

COMMAND = "refresh-sleeves"
REFRESH_ARGS = ("daily-refresh", "--all")
INTERRUPT_GRACE_SECONDS = 15.0
# A step skipped on request (--skip-validation, --skip-analysis) ends as `skipped`.
OK_OUTCOMES = ("success", "skipped")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="refresh the data once, then run every sleeve profile in parallel",
        description=(
            "Refresh the warehouse once (`orchestrate.py daily-refresh --all`), then run the "
            "sleeve profiles (default: every configs/profiles/*.yml) as parallel, isolated "
            "`orchestrate.py production` runs, each with its own run id <batch>_<profile> and "
            "directory data/runs/<run_id>/. Ends with a summary per run: its status (the "
            "failing step named) and whether its audit trail verifies with every outcome a "
            "success. Exit status 1 when the refresh or any run failed. A daily-refresh started "
            "while the sleeves run fails at once, naming them."
        ),
    )
    parser.add_argument("--profiles", help="comma-separated profile names (default: every profile)")
    parser.add_argument(
        "--skip-refresh",
        action="store_true",
        help="do not refresh the data first (the sleeves read the warehouse as it is)",
    )
    parser.add_argument(
        "--run-after-failed-refresh",
        action="store_true",
        help=(
            "run the sleeves even when the refresh failed (e.g. a quality gate failed for some "
            "symbols, the others refreshed): they read what it wrote; the exit status stays 1"
        ),
    )
    parser.add_argument(
        "--refresh-config",
        type=Path,
        help="refresh config passed to daily-refresh --config (default: its own default)",
    )
    parser.add_argument(
        "--parallel",
        type=positive_int,
        help="how many sleeve runs at once (default: all of them)",
    )
    parser.add_argument(
        "--skip-validation", action="store_true", help="pass --skip-validation to every run"
    )
    parser.add_argument(
        "--skip-analysis", action="store_true", help="pass --skip-analysis to every run"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument("--quiet", action="store_true", help="summary and errors only")
    parser.set_defaults(handler=run)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


@dataclass
class ChildRun:
    """One subprocess of orchestrate.py (the data refresh or a sleeve run) and how it ended."""

    label: str
    args: tuple[str, ...]
    run_id: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    last_line: str = ""
    process: subprocess.Popen[str] | None = field(default=None, repr=False)


def orchestrate(*args: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "orchestrate.py"), *args]


def run_child(child: ChildRun, started: list[ChildRun], lock: threading.Lock) -> ChildRun:
    """Run it to the end, its output relayed line by line with its label."""
    begin = time.perf_counter()
    process = subprocess.Popen(
        orchestrate(*child.args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
    )
    child.process = process
    with lock:
        started.append(child)
    assert process.stdout is not None
    for line in process.stdout:
        text = line.rstrip()
        if text:
            child.last_line = text
            log.info("[%s] %s", child.label, text)
    child.returncode = process.wait()
    child.seconds = time.perf_counter() - begin
    return child


def run_children(children: Sequence[ChildRun], parallel: int) -> None:
    """At most `parallel` at once; on an interruption, stop the ones this command started."""
    started: list[ChildRun] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(run_child, child, started, lock) for child in children]
        try:
            for future in futures:
                future.result()
        except BaseException:
            with lock:
                interrupt(started)
            raise


def interrupt(children: Sequence[ChildRun]) -> None:
    """SIGINT first, so that each run records where it stopped; SIGKILL if it does not end."""
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass(frozen=True)
class SleeveReport:
    profile: str
    run_id: str
    ok: bool
    line: str


def sleeve_report(profile: str, child: ChildRun) -> SleeveReport:
    """How one sleeve run ended, from its run directory (manifest and audit trail)."""
    run_dir = runs_dir() / child.run_id
    if not (run_dir / MANIFEST_FILE).is_file():
        why = child.last_line or f"exit status {child.returncode}"
        return SleeveReport(profile, child.run_id, False, f"{profile}: did not start: {why}")
    manifest = read_manifest(run_dir)
    ok_audit, problems = verify_audit(run_dir / AUDIT_FILE)
    if ok_audit:
        outcomes = [r for r in read_records(run_dir / AUDIT_FILE) if r["kind"] == "outcome"]
        unsuccessful = [r["step"] for r in outcomes if r["status"] not in OK_OUTCOMES]
        audit = f"audit verified, outcomes: {outcome_counts(outcomes)}"
    else:
        unsuccessful, audit = ["audit"], f"audit does NOT verify: {problems[0]}"
    if manifest["status"] != "success":
        state = f"failed at step '{manifest['failed_step']}': {manifest['error']}"
    else:
        state = "success"
    ok = manifest["status"] == "success" and child.returncode == 0 and not unsuccessful
    line = f"{profile}: {state} in {child.seconds:.1f}s; {audit}; {run_dir}"
    return SleeveReport(profile, child.run_id, ok, line)


def selected_profiles(text: str | None) -> dict[str, str]:
    """Profile name -> how to pass it on (a name, or a profile file's path), each validated."""
    specs = [n.strip() for n in (text or "").split(",") if n.strip()] or available_profiles()
    if not specs:
        raise CliError("no sleeve profiles in configs/profiles")
    named: dict[str, str] = {}
    for spec in dict.fromkeys(specs):
        name = load_profile(spec).name  # a clear error (file, key) before anything runs
        if name in named:
            raise CliError(f"--profiles: two profiles are named {name}: {named[name]}, {spec}")
        named[name] = spec
    return named


def refresh_args(args: argparse.Namespace) -> tuple[str, ...]:
    config = ("--config", str(args.refresh_config)) if args.refresh_config else ()
    return (*REFRESH_ARGS, *config)


def production_args(profile: str, run_id: str, args: argparse.Namespace) -> tuple[str, ...]:
    flags = [
        f"--{flag}"
        for flag in ("skip-validation", "skip-analysis")
        if getattr(args, flag.replace("-", "_"))
    ]
    return ("production", "--profile", profile, "--run-id", run_id, *flags)


def run(args: argparse.Namespace) -> int:
    setup_logging(COMMAND, quiet=args.quiet)
    profiles = selected_profiles(args.profiles)
    batch = new_run_id()
    run_ids = {name: validate_run_id(f"{batch}_{name}") for name in profiles}
    sleeves = {
        name: ChildRun(name, production_args(spec, run_ids[name], args), run_ids[name])
        for name, spec in profiles.items()
    }
    parallel = args.parallel or len(profiles)
    if args.dry_run:
        print("\n".join(plan_lines(args, sleeves, parallel)))
        return 0
    warehouse = warehouse_path()
    if not warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {warehouse}: run `orchestrate.py ingest` first")
    started = time.perf_counter()
    refresh = None
    if not args.skip_refresh:
        refresh = ChildRun("daily-refresh", refresh_args(args))
        log.info("refresh-sleeves %s: refreshing the data (%s)", batch, " ".join(refresh.args))
        run_children([refresh], 1)
        if refresh.returncode != 0 and not args.run_after_failed_refresh:
            return finish(batch, refresh, {}, time.perf_counter() - started)
    log.info("refresh-sleeves %s: %d sleeves, %d at once", batch, len(sleeves), parallel)
    with ReaderLock(warehouse, batch, f"{COMMAND} ({', '.join(profiles)})"):
        run_children(list(sleeves.values()), parallel)
    return finish(batch, refresh, sleeves, time.perf_counter() - started)


def refresh_error(refresh: ChildRun) -> str:
    """The refresh's own last line, without its `error: ` prefix."""
    return refresh.last_line.removeprefix("error: ") or f"exit status {refresh.returncode}"


def plan_lines(args: argparse.Namespace, sleeves: dict[str, ChildRun], parallel: int) -> list[str]:
    lines = ["dry run: nothing is run"]
    if args.skip_refresh:
        lines.append("  data refresh: skipped (--skip-refresh)")
    else:
        lines.append(f"  data refresh: orchestrate.py {' '.join(refresh_args(args))}")
    lines.append(f"  then {len(sleeves)} sleeve runs, {parallel} at once:")
    lines += [f"    orchestrate.py {' '.join(child.args)}" for child in sleeves.values()]
    return lines


def finish(
    batch: str, refresh: ChildRun | None, sleeves: dict[str, ChildRun], seconds: float
) -> int:
    lines = [f"refresh-sleeves {batch}: {len(sleeves)} sleeve runs in {seconds:.1f}s"]
    if refresh is None:
        lines.append("data refresh: skipped (--skip-refresh)")
    else:
        state = "success" if refresh.returncode == 0 else f"failed: {refresh_error(refresh)}"
        lines.append(f"data refresh: {state} in {refresh.seconds:.1f}s")
    reports = [sleeve_report(name, child) for name, child in sleeves.items()]
    lines += [report.line for report in reports]
    log_summary(lines)
    problems = []
    if refresh is not None and refresh.returncode != 0:
        then = "the sleeves ran anyway" if sleeves else "so no sleeve ran"
        problems.append(f"the data refresh failed, {then}: {refresh_error(refresh)}")
    failed = [r for r in reports if not r.ok]
    if failed:
        problems.append(
            f"{len(failed)} of {len(reports)} sleeve runs failed: "
            + "; ".join(r.line.split(";")[0] for r in failed)
        )
    if not problems:
        return 0
    reason = "; ".join(problems)
    log.error("error: %s", reason)
    print(f"error: {reason}", file=sys.stderr)
    return 1
