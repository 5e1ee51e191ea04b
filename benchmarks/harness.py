"""Benchmark plumbing: each case runs in its own process so its peak memory is its own."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Metrics = dict[str, float | int | str]


@dataclass(frozen=True)
class Case:
    """One benchmark: `run(workdir)` returns named figures (seconds, rows/s, ratios...)."""

    name: str
    description: str
    run: Callable[[Path], Metrics]


def timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB (Linux: KiB units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


@dataclass(frozen=True)
class Command:
    """A finished command: its wall time, its own peak memory and what it printed."""

    seconds: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_command(args: list[str], env: dict[str, str], cwd: Path) -> Command:
    """Run `args` to completion; its peak memory comes from its own resource usage (wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Command(
            round(seconds, 2), round(usage.ru_maxrss / 1024, 1), process.returncode,
            out.read(), err.read(),
        )  # fmt: skip


def run_case_in_subprocess(module: str, case: str, workdir: Path) -> Metrics:
    """Run one case in a child process; return its figures plus wall time and peak memory."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--child", module, case, str(workdir)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = round(time.perf_counter() - started, 2)
    if result.returncode != 0:
        return {"error": f"exit {result.returncode}", "case_wall_s": wall}
    metrics: Metrics = json.loads(result.stdout.strip().splitlines()[-1])
    metrics["case_wall_s"] = wall
    return metrics
