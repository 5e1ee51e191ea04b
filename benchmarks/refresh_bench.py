"""daily-refresh benchmarks on the `bench` preset (500 symbols, 8 years of daily bars).

The base (prepared once per benchmark folder, `refresh-base/`, shared by the cases): the preset
ingested up to the day before its last, then every layer built by `daily-refresh --bars --returns
--emas --features` (the full build, timed). Cases:

- refresh_one_day: `daily-refresh --all` with a config whose source is the preset up to its last
  day, in the base's folder (its warehouse restored, its dbt target kept, as on an operator's
  machine, where dbt has parsed the project before): the operator's daily command for one new
  day (ingest, bars, returns, EMAs, features, their quality gates, the published files). Wall
  time, the time of each step (from the run manifest), the time outside any step (start-up, parse,
  summary, final checkpoint) and what the gates add alone, against the full build; the goal is
  under 15 s on 2 cores.
- dbt_invocation_overhead: how to invoke dbt. The models of the four dbt steps of the same
  one-day refresh (`dbt run`, the invocation without the data tests) on two copies: in-process
  (`quantwarehouse.dbt.run_dbt`, the project parsed once and its manifest reused, as
  daily-refresh does) and one `dbt run` subprocess per step (as a shell script would run them);
  then each step again with nothing left to do, which is dbt's own start-up overhead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import Case, Command, Metrics, run_command
from ingest.synthetic import resolve_preset
from quantwarehouse.paths import DBT_PROJECT_DIR, REPO_ROOT

PRESET = "bench"
GOAL_SECONDS = 15.0
REVISION_WINDOW_DAYS = 200  # the latest revision_after_days of the synthetic presets
# The dbt steps of daily-refresh (quantwarehouse/refresh/runner.py) and their selections.
DBT_STEPS: dict[str, tuple[str, ...]] = {
    "build bars": ("staging", "bars"),
    "build returns and marts": ("returns", "marts"),
    "build emas": ("emas",),
    "build features": ("features",),
}


def preset_days() -> tuple[str, str]:
    """The day before the preset's last (the base) and its last (the new day)."""
    last = resolve_preset(PRESET).end
    return str(last - timedelta(days=1)), str(last)


def environment(folder: Path) -> dict[str, str]:
    """A private data folder, logs and dbt target for one warehouse."""
    return {
        **os.environ,
        "QWH_DATA_DIR": str(folder / "data"),
        "QWH_WAREHOUSE": str(folder / "data" / "warehouse.duckdb"),
        "QWH_LOGS_DIR": str(folder / "logs"),
        "DBT_TARGET_PATH": str(folder / "dbt-target"),
        "DBT_LOG_PATH": str(folder / "dbt-logs"),
    }


def measured(args: list[str], folder: Path, *, allowed: tuple[int, ...] = (0,)) -> Command:
    """Run `args` on the warehouse of `folder`; an exit status not in `allowed` is an error."""
    result = run_command(args, environment(folder), REPO_ROOT)
    if result.returncode not in allowed:
        raise RuntimeError(
            f"{' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def child(args: list[str], folder: Path, *, allowed: tuple[int, ...] = (0,)) -> str:
    return measured(args, folder, allowed=allowed).stdout


def orchestrate(folder: Path, *args: str, allowed: tuple[int, ...] = (0,)) -> Command:
    return measured(
        [sys.executable, str(REPO_ROOT / "orchestrate.py"), *args], folder, allowed=allowed
    )


def write_config(folder: Path, until: str) -> Path:
    """The refresh config of the new day. The synthetic source regenerates whatever days it is
    asked for, so `start` bounds them, as a daily API or archive download is bounded: to the
    last REVISION_WINDOW_DAYS, within which the preset publishes its late bars and revisions."""
    options = f"    preset: {PRESET}\n    start: -{REVISION_WINDOW_DAYS}d\n    until: {until}\n"
    path = folder / "refresh.yml"
    path.write_text(f"source:\n  name: synthetic\n  options:\n{options}")
    return path


def last_manifest(folder: Path) -> dict[str, Any]:
    runs = sorted((folder / "data" / "runs").glob("*/run_manifest.json"))
    return json.loads(runs[-1].read_text())


def step_seconds(manifest: dict[str, Any]) -> dict[str, float]:
    return {s["name"]: round(s["seconds"] or 0.0, 2) for s in manifest["stages"]}


def base(root: Path) -> tuple[Path, dict[str, Any]]:
    """The shared base (prepared on first use) and the figures of its preparation."""
    folder = root / "refresh-base"
    figures_file = folder / "prepared.json"
    if not figures_file.exists():
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "data").mkdir(parents=True)
        base_day, _ = preset_days()
        command = ["ingest", "--source", "synthetic", "--preset", PRESET, "--until", base_day]
        ingest = orchestrate(folder, *command, "--quiet")
        build = ["daily-refresh", "--bars", "--returns", "--emas", "--features", "--quiet"]
        full = orchestrate(folder, *build)
        save_warehouse(folder)
        figures = {
            "ingest_s": round(ingest.seconds, 1),
            "full_build_s": round(full.seconds, 1),
            "full_build_peak_mb": full.peak_mb,
            "full_build_steps_s": step_seconds(last_manifest(folder)),
        }
        figures_file.write_text(json.dumps(figures))
    return folder, json.loads(figures_file.read_text())


def _copy_files(pattern: str, source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob(pattern):
        if path.is_file():
            shutil.copyfile(path, target / path.name)


def _copy_tree(source: Path, target: Path) -> None:
    """Replace `target` with a copy of `source` (nothing, when `source` does not exist)."""
    shutil.rmtree(target, ignore_errors=True)
    if source.exists():
        shutil.copytree(source, target)


def copy_warehouse(source: Path, folder: Path) -> None:
    """A fresh `folder` holding a copy of the warehouse of `source`."""
    shutil.rmtree(folder, ignore_errors=True)
    _copy_files("warehouse.duckdb*", source / "data", folder / "data")


def save_warehouse(folder: Path) -> None:
    """Keep a copy of the warehouse of `folder`, and of the files published from it, for
    `restore_warehouse`."""
    _copy_files("warehouse.duckdb*", folder / "data", folder / "saved")
    _copy_tree(folder / "data" / "lakehouse", folder / "saved" / "lakehouse")


def restore_warehouse(folder: Path) -> None:
    """Put back the warehouse and published files saved by `save_warehouse` (a publish then
    rewrites what an operator's daily publish would). A case run in the base's own folder keeps
    its dbt target folder, as an operator's daily run does: dbt parses the project partially
    (nothing changed: no parse at all) instead of from scratch."""
    for path in (folder / "data").glob("warehouse.duckdb*"):
        path.unlink()
    _copy_files("warehouse.duckdb*", folder / "saved", folder / "data")
    _copy_tree(folder / "saved" / "lakehouse", folder / "data" / "lakehouse")
    # Flushed now, not while the case runs: the kernel writing back 5 GB of copied pages
    # competes with the measured run for the disk.
    os.sync()


def copy_base(root: Path, folder: Path) -> None:
    source, _ = base(root)
    copy_warehouse(source, folder)


def refresh_one_day(workdir: Path) -> Metrics:
    folder, prepared = base(workdir.parent)
    restore_warehouse(folder)
    _, new_day = preset_days()
    config = write_config(folder, new_day)
    # Exit status 1 is a run that finished with a failure (e.g. a quality gate): still timed.
    command = ["daily-refresh", "--all", "--config", str(config)]
    run = orchestrate(folder, *command, allowed=(0, 1))
    wall = run.seconds
    manifest = last_manifest(folder)
    steps = step_seconds(manifest)
    figures: Metrics = {
        "refresh_all_one_day_s": round(wall, 1),
        "goal_s": GOAL_SECONDS,
        "full_build_s": prepared["full_build_s"],
        "base_ingest_s": prepared["ingest_s"],
        "status": manifest["status"],
        "failure": manifest["error"] or "",
        "peak_mb": run.peak_mb,
    }
    for name, seconds in steps.items():
        figures[f"step {name} s"] = seconds
    for record in manifest["stages"]:
        outputs = record.get("outputs") or {}
        if "dbt_seconds" in outputs:
            figures[f"step {record['name']} dbt nodes s"] = outputs["node_seconds"]
    figures["steps_total_s"] = round(sum(steps.values()), 1)
    # A deferred gate overlaps the steps after it: count wall time, not the steps' sum.
    stages = manifest["stages"]
    everything = covered(step_intervals(stages))
    builds = step_intervals([s for s in stages if not s["name"].startswith("gate ")])
    figures["outside_steps_s"] = round(wall - everything, 1)
    figures["gates_alone_s"] = round(everything - covered(builds), 1)
    figures["refresh_without_gates_s"] = round(wall - (everything - covered(builds)), 1)
    return figures


def step_intervals(stages: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) of each stage's work, in seconds since the epoch."""
    intervals = []
    for stage in stages:
        start = datetime.fromisoformat(stage["started_at"]).timestamp()
        intervals.append((start, start + (stage["seconds"] or 0.0)))
    return intervals


def covered(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of `intervals`."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


IN_PROCESS = """
import json, sys, time
from quantwarehouse.dbt import parse_project, run_dbt
steps = json.loads(sys.argv[1])
started = time.perf_counter()
manifest = parse_project()
timings = {"parse": time.perf_counter() - started}
for rounds in ("one_day", "no_op"):
    for name, select in steps.items():
        began = time.perf_counter()
        run_dbt(["run", "--select", *select], manifest=manifest)
        timings[f"{rounds} {name}"] = time.perf_counter() - began
print(json.dumps(timings))
"""


def in_process(folder: Path) -> dict[str, float]:
    payload = json.dumps(DBT_STEPS)
    output = child([sys.executable, "-c", IN_PROCESS, payload], folder)
    return json.loads(output.strip().splitlines()[-1])


def dbt_subprocesses(folder: Path) -> dict[str, float]:
    dbt = str(Path(sys.executable).with_name("dbt"))
    project = ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    timings = {}
    for rounds in ("one_day", "no_op"):
        for name, select in DBT_STEPS.items():
            began = time.perf_counter()
            child([dbt, "run", "--select", *select, *project, "--quiet"], folder)
            timings[f"{rounds} {name}"] = time.perf_counter() - began
    return timings


def dbt_invocation_overhead(workdir: Path) -> Metrics:
    _, new_day = preset_days()
    figures: Metrics = {}
    for label, run in (("in_process", in_process), ("subprocess", dbt_subprocesses)):
        folder = workdir / label
        copy_base(workdir.parent, folder)
        command = ["ingest", "--source", "synthetic", "--preset", PRESET, "--until", new_day]
        orchestrate(folder, *command, "--quiet")
        timings = run(folder)
        for key, seconds in timings.items():
            figures[f"{label} {key} s"] = round(seconds, 2)
        for rounds in ("one_day", "no_op"):
            total = sum(timings[f"{rounds} {name}"] for name in DBT_STEPS)
            figures[f"{label} {rounds} total s"] = round(total + timings.get("parse", 0.0), 2)
    return figures


CASES = [
    Case(
        "refresh_one_day",
        "daily-refresh --all for one new day on the bench preset (500 symbols), by step",
        refresh_one_day,
    ),
    Case(
        "dbt_invocation_overhead",
        "the four dbt steps of a one-day refresh: in-process with one parse vs a dbt subprocess "
        "per step, then the same with nothing to do (dbt's own overhead)",
        dbt_invocation_overhead,
    ),
]
