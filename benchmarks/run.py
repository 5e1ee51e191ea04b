"""Run every benchmark (or those named) and print one table.

python -m benchmarks.run [--only case_a,case_b] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path

from benchmarks.harness import Case, Metrics, peak_rss_mb, run_case_in_subprocess

# Modules holding `CASES: list[Case]`; each issue adds its own.
CASE_MODULES: tuple[str, ...] = (
    "benchmarks.ingest_bench",
    "benchmarks.core_bench",
    "benchmarks.ema_bench",
    "benchmarks.refresh_bench",
    "benchmarks.sleeves_bench",
)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cases_of(module: str) -> dict[str, Case]:
    return {case.name: case for case in import_module(module).CASES}


def run_child(module: str, name: str, workdir: Path) -> None:
    metrics = cases_of(module)[name].run(workdir)
    metrics["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(metrics))


def print_table(results: dict[str, Metrics]) -> None:
    rows = [
        (case, key, str(value))
        for case, figures in results.items()
        for key, value in figures.items()
    ]
    widths = [max(len(row[i]) for row in [("case", "figure", "value"), *rows]) for i in range(3)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format("case", "figure", "value"))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="comma-separated case names to run (default: all)")
    parser.add_argument("--workdir", help="where cases write their data (default: a temp folder)")
    parser.add_argument(
        "--child", nargs=3, metavar=("MODULE", "CASE", "WORKDIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        module, name, workdir = args.child
        run_child(module, name, Path(workdir))
        return
    wanted = set(args.only.split(",")) if args.only else None
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="qwh-bench-"))
    results: dict[str, Metrics] = {}
    for module in CASE_MODULES:
        for name in cases_of(module):
            if wanted is None or name in wanted:
                print(f"running {name} ...", flush=True)
                results[name] = run_case_in_subprocess(module, name, root / name)
    print_table(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults saved to {out}")


if __name__ == "__main__":
    main()
