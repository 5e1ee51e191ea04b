"""One sleeve production run (`orchestrate.py production --profile P`): steps as dbt Python models.

A run lives in its own folder `data/runs/<run_id>/` and writes nothing anywhere else:

- `run.duckdb`: the run's database. dbt's `run` target (dbt_project/profiles.yml) writes the step
  tables into it and attaches the warehouse beside it READ-ONLY as `wh`; the sleeve models
  (python_models/sleeves) read the warehouse only through the dbt source `wh`.
- `<profile>.yml`: the profile as it was when the run started (the models read this copy).
- `run_manifest.json`: the run and its stages (status, start, end, error), rewritten atomically
  at every change, so it is always whole and always says how far the run got.
- `audit.jsonl`: the hash-chained audit trail (quantwarehouse.sleeves.audit): a genesis record,
  then an intent before each step and an outcome after it, with the hashes of the tables it read
  and wrote.
- the artifacts the steps write (JSON, CSV, HTML, PNG), `INDEX.md` (written last), `dbt/` (dbt's
  target and log folders of this run only) and `production.log`.

Each step is one `dbt build` of its models (with their tests) in this process, on a manifest
parsed once per run with the run's vars (`RunParams.dbt_vars`). The models find the vars in
their `meta` config (dbt_project.yml, folder python_models/sleeves), as `run_params(dbt)`. A failing
step stops the run: the steps after it are not run and the manifest, the audit trail and INDEX.md
say which step failed and why. Skipped steps (--skip-validation, --skip-analysis) are not run
and are recorded as skipped with the flag that skipped them.

The whole run holds a reader lock on the warehouse (quantwarehouse.lock.ReaderLock): any number
of sleeve runs read at once, and a writer (daily-refresh) fails at once naming them meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ingest.scanners.run import write_json_atomically
from quantwarehouse.dbt import (
    DbtResult,
    DbtRunError,
    NodeResult,
    dbt_args,
    invoke_dbt,
    node_result,
    one_line,
)
from quantwarehouse.lock import ReaderLock
from quantwarehouse.paths import REPO_ROOT, WAREHOUSE_ENV, runs_dir, warehouse_path
from quantwarehouse.runs import new_run_id, validate_run_id
from quantwarehouse.sleeves.audit import AuditTrail, environment_info
from quantwarehouse.sleeves.backtest import BacktestResult
from quantwarehouse.sleeves.jsonable import jsonable
from quantwarehouse.sleeves.profiles import Profile, load_profile
from quantwarehouse.sleeves.synthesis import short_returns

log = logging.getLogger(__name__)

RUN_TARGET = "run"
RUN_DB_ENV = "QWH_RUN_DB"
RUN_DB_FILE = "run.duckdb"
MANIFEST_FILE = "run_manifest.json"
AUDIT_FILE = "audit.jsonl"
INDEX_FILE = "INDEX.md"
LOG_FILE = "production.log"
# The warehouse tables a sleeve run reads (declared as the dbt source `wh`).
REQUIRED_TABLES = ("features_matrix", "returns_daily", "bars_1d", "dim_symbols")


class RunSetupError(ValueError):
    """The run cannot start (bad profile, run id, missing warehouse tables): nothing is written."""


# -- the run's parameters, as the models see them ------------------------------------------------


def _flag(value: Any) -> bool:
    """A boolean dbt var as rendered into the models' meta (a bool or its text)."""
    return value is True or str(value).strip().lower() == "true"


@dataclass(frozen=True)
class RunParams:
    """What every sleeve model needs to know about its run (dbt vars `sleeve_*`)."""

    profile_file: Path
    run_id: str
    run_dir: Path
    skip_validation: bool = False
    skip_analysis: bool = False
    # Testing only: synthesize this symbol's atom with the wrong sign ('first': the first atom),
    # to show that the directional sign-test gate stops the run.
    inject_sign_error: str = ""

    def dbt_vars(self) -> dict[str, Any]:
        return {
            "sleeve_profile": str(self.profile_file),
            "sleeve_run_id": self.run_id,
            "sleeve_run_dir": str(self.run_dir),
            "sleeve_skip_validation": self.skip_validation,
            "sleeve_skip_analysis": self.skip_analysis,
            "sleeve_inject_sign_error": self.inject_sign_error,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> RunParams:
        if not meta.get("sleeve_run_id") or not meta.get("sleeve_profile"):
            raise RuntimeError(
                "the sleeve models run only inside a production run (the dbt vars sleeve_run_id "
                "and sleeve_profile are not set): use `orchestrate.py production --profile P`"
            )
        return cls(
            profile_file=Path(meta["sleeve_profile"]),
            run_id=str(meta["sleeve_run_id"]),
            run_dir=Path(meta["sleeve_run_dir"]),
            skip_validation=_flag(meta.get("sleeve_skip_validation")),
            skip_analysis=_flag(meta.get("sleeve_skip_analysis")),
            inject_sign_error=str(meta.get("sleeve_inject_sign_error") or ""),
        )

    def profile(self) -> Profile:
        return load_profile(self.profile_file)


def run_params(meta: Mapping[str, Any] | None) -> RunParams:
    """The run's parameters inside a sleeve model: `run_params(dbt.config.get("meta"))`.

    The call `dbt.config.get("meta")` must be in the model file itself: dbt hands a Python model
    only the config keys it sees the model's own code ask for.
    """
    return RunParams.from_meta(meta or {})


# -- frames between the run tables and the library -----------------------------------------------


def wide(frame: pd.DataFrame, column: str, key: str = "symbol") -> pd.DataFrame:
    """Long (bar_date, key, column) rows as a date x key matrix (dates as Timestamps, sorted)."""
    matrix = frame.pivot(index="bar_date", columns=key, values=column)
    matrix.index = pd.DatetimeIndex(pd.to_datetime(matrix.index), name="bar_date")
    matrix.columns.name = None
    return matrix.sort_index().astype("float64")


def long(matrix: pd.DataFrame, column: str, key: str = "symbol") -> pd.DataFrame:
    """A date x key matrix as long rows (bar_date, key, column), missing cells kept as nulls."""
    stacked = matrix.rename_axis(index="bar_date", columns=key).stack(future_stack=True)
    frame = stacked.rename(column).reset_index()
    frame["bar_date"] = pd.to_datetime(frame["bar_date"]).dt.date
    return frame.sort_values(["bar_date", key], kind="mergesort").reset_index(drop=True)


# The returns matrix's rule (quantwarehouse.lakehouse): a multi-day move is no one-day return.
ONE_DAY_RETURN_SQL = "case when not is_first_bar and not spans_missing_days then simple_return end"


def latest_date(relation: duckdb.DuckDBPyRelation, column: str) -> date:
    latest = relation.aggregate(f"max({column})").fetchone()[0]
    if latest is None:
        raise RuntimeError(f"{relation.alias} is empty: build the warehouse first")
    return pd.Timestamp(latest).date()


def read_window_returns(
    returns: duckdb.DuckDBPyRelation, symbols: list[str], as_of: Any, lookback_days: int
) -> pd.DataFrame:
    """One-day simple returns (date x symbol) of `returns_daily` over the lookback window."""
    end = pd.Timestamp(as_of).date()
    start = end - timedelta(days=lookback_days - 1)
    frame = (
        returns.filter(f"bar_date between date '{start}' and date '{end}'")
        .project(f"bar_date, symbol, {ONE_DAY_RETURN_SQL} as simple_return")
        .df()
    )
    return wide(frame[frame["symbol"].isin(symbols)], "simple_return")


CANDIDATE_FIELDS = ("close", "traded_value", "volatility", "listing_age_days")


def candidate_records(
    found: pd.DataFrame, health: pd.DataFrame, profile: Profile, scanner: str, as_of: date
) -> pd.DataFrame:
    """The scanner's ranked candidates with their strict health (table sleeve_candidates)."""
    table = found[["rank", "symbol", profile.rating_field, *CANDIDATE_FIELDS]].rename(
        columns={"rank": "scan_rank", profile.rating_field: "rating"}
    )
    table = table.merge(health.rename(columns={"reason": "health_reason"}), on="symbol", how="left")
    table["first_missing"] = pd.to_datetime(table["first_missing"]).dt.date
    return table.assign(scanner=scanner, rating_field=profile.rating_field, as_of=as_of)


def selected_symbols(decisions: pd.DataFrame) -> list[str]:
    """The selected symbols of sleeve_selection, in the order HTR picked them."""
    kept = decisions[decisions["kept"]].sort_values("selection_order")
    return kept["symbol"].tolist()


def ordered_atoms(atoms: pd.DataFrame) -> list[str]:
    """The atom ids of sleeve_atoms in synthesis order."""
    return atoms.sort_values("atom_order")["atom"].tolist()


def atom_matrix(atoms: pd.DataFrame, atom_returns: pd.DataFrame) -> pd.DataFrame:
    """sleeve_atom_returns as a date x atom matrix, the atoms in synthesis order."""
    return wide(atom_returns, "atom_return", key="atom")[ordered_atoms(atoms)]


def inject_sign_error(
    returns: pd.DataFrame, atoms: pd.DataFrame, raw: pd.DataFrame, which: str
) -> pd.DataFrame:
    """Testing only: one atom's stream with the wrong sign (SHORT: the raw returns, LONG: the
    inverted ones), the error the directional sign test exists to catch. `which` is a symbol of
    the atoms, or 'first'."""
    rows = atoms.iloc[:1] if which == "first" else atoms[atoms["symbol"] == which]
    if rows.empty:
        raise ValueError(
            f"--inject-sign-error {which}: no atom of that symbol; atoms: "
            f"{', '.join(atoms['symbol']) or 'none'} (or 'first')"
        )
    atom, symbol, direction = rows.iloc[0][["atom", "symbol", "direction"]]
    wrong = short_returns(raw[symbol]) if direction == "LONG" else raw[symbol]
    log.warning("testing: atom %s synthesized with the wrong sign", atom)
    return returns.assign(**{atom: wrong.to_numpy()})


class SignTestGateError(RuntimeError):
    """The directional sign test failed with the profile's gate on: the run stops."""


def gate_sign_test(
    params: RunParams, result: Mapping[str, Any], check: str, file_name: str
) -> pd.DataFrame:
    """Write a sign test's document, stop the run if its gate is on and it failed, and return
    its one-row table."""
    gate = params.profile().gates.sign_test
    errors = [f for f in result["findings"] if f["severity"] == "error"]
    failing = sorted({str(f["atom"]) for f in errors})
    document = {"run_id": params.run_id, "check": check, "gate": gate, **result}
    path = write_artifact_json(params, file_name, document)
    if gate and result["status"] != "PASS":
        shown = "; ".join(f"{f['atom']}: {f['message']}" for f in errors[:5])
        raise SignTestGateError(
            f"directional sign test ({check}) FAILED for {len(failing)} atom(s): "
            f"{', '.join(failing)} ({shown}); see {path}"
        )
    return pd.DataFrame(
        [
            {
                "check_name": check,
                "status": result["status"],
                "gate_enabled": gate,
                "checked_atoms": result["checked_atoms"],
                "long_atoms": result["long_atoms"],
                "short_atoms": result["short_atoms"],
                "checked_weights": result["checked_weights"],
                "error_findings": len(errors),
                "failing_atoms": ", ".join(failing),
                "findings": json.dumps(jsonable(result["findings"]), sort_keys=True),
                "document": file_name,
            }
        ]
    )


def linkage_rows(linkage: np.ndarray, atoms: list[str]) -> pd.DataFrame:
    """A scipy linkage matrix as rows: merge k joins `left` and `right` (ids below the number of
    atoms are atoms, in `atoms` order; id n + j is merge j) at `distance` into `size` atoms."""
    count = len(atoms)

    def label(node: int) -> str:
        return atoms[node] if node < count else f"merge {node - count}"

    rows = [
        {
            "merge": step,
            "left_id": int(left),
            "right_id": int(right),
            "left_label": label(int(left)),
            "right_label": label(int(right)),
            "distance": float(distance),
            "size": int(size),
        }
        for step, (left, right, distance, size) in enumerate(linkage)
    ]
    columns = ["merge", "left_id", "right_id", "left_label", "right_label", "distance", "size"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype(
        {
            "merge": "int64",
            "left_id": "int64",
            "right_id": "int64",
            "distance": "float64",
            "size": "int64",
            "left_label": "string",
            "right_label": "string",
        }
    )


def linkage_matrix(rows: pd.DataFrame) -> np.ndarray:
    """sleeve_cluster_linkage back as a scipy linkage matrix."""
    ordered = rows.sort_values("merge")
    return ordered[["left_id", "right_id", "distance", "size"]].to_numpy(dtype=np.float64)


def backtest_period(features: pd.DataFrame, profile: Profile, as_of: Any) -> tuple[date, date]:
    """The validation backtest's first and last rebalance-calendar days: the last `backtest_days`
    up to the as-of date, starting no earlier than the first day with a full lookback window."""
    end = pd.Timestamp(as_of).date()
    first = pd.Timestamp(pd.to_datetime(features["bar_date"]).min()).date()
    earliest = first + timedelta(days=profile.lookback_days)
    start = max(end - timedelta(days=profile.backtest_days - 1), earliest)
    if start > end:
        raise RuntimeError(
            f"not enough history for the validation backtest: the features matrix starts on "
            f"{first}, a rebalance needs {profile.lookback_days} days of returns before it, and "
            f"the as-of date is {end} (use --skip-validation, or a shorter lookback)"
        )
    return start, end


REBALANCE_COLUMNS = (
    "universe",
    "healthy",
    "selected",
    "stage_ended",
    "method",
    "fallback",
    "turnover",
    "cost",
)


def backtest_ledger(result: BacktestResult) -> pd.DataFrame:
    """The backtest's daily rows (table sleeve_backtest): returns, equity, drawdown (from a
    starting equity of 1, as the metrics count it) and, on rebalance days, the rebalance."""
    net = result.daily_returns
    equity = (1.0 + net).cumprod()
    peak = equity.cummax().clip(lower=1.0)
    ledger = pd.DataFrame(
        {
            "gross_return": result.gross_returns,
            "net_return": net,
            "equity": equity,
            "drawdown": equity / peak - 1.0,
        }
    )
    rebalances = result.rebalances.set_index("rebalance_date")[list(REBALANCE_COLUMNS)]
    ledger = ledger.join(rebalances, how="left")
    ledger["is_rebalance"] = ledger.index.isin(rebalances.index)
    ledger.index = pd.to_datetime(ledger.index).date
    ledger = ledger.rename_axis("bar_date").reset_index()
    return ledger.astype(
        {"universe": "Int64", "healthy": "Int64", "selected": "Int64", "stage_ended": "Int64"}
    )


def write_artifact_json(params: RunParams, name: str, document: Mapping[str, Any]) -> Path:
    """A JSON artifact of the run, written atomically; NaN becomes null, dates ISO text."""
    path = params.run_dir / name
    write_json_atomically(path, jsonable(document))
    return path


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write a file so that a reader sees the old one or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


# -- steps ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One production step: a dbt build of its models; `metrics_sql` summarizes what it wrote."""

    name: str
    does: str
    models: tuple[str, ...]
    skip_flag: str | None = None
    metrics_sql: str = ""


STEPS: tuple[Step, ...] = (
    Step(
        "aggregation",
        "scanner candidates as of the latest features date, their lookback returns, strict health",
        ("sleeve_candidates", "sleeve_returns_window"),
        metrics_sql="select count(*) as candidates, count(*) filter (where healthy) as healthy, "
        "cast(max(as_of) as varchar) as as_of from main.sleeve_candidates",
    ),
    Step(
        "selection",
        "HTR selection with a decision per candidate",
        ("sleeve_selection",),
        metrics_sql="select count(*) filter (where kept) as selected, "
        "max(stage_ended) as stage_ended from main.sleeve_selection",
    ),
    Step(
        "synthesis",
        "strategy atoms and their return streams (SHORT: -clip(raw, upper=1))",
        ("sleeve_atoms", "sleeve_atom_returns"),
        metrics_sql="select count(*) as atoms from main.sleeve_atoms",
    ),
    Step(
        "sign_test_pre_opt",
        "directional sign test before optimization",
        ("sleeve_sign_test_pre_opt",),
        metrics_sql="select status, error_findings from main.sleeve_sign_test_pre_opt",
    ),
    Step(
        "pre_optimization",
        "correlation clusters, antifragility, regime caps",
        ("sleeve_clusters", "sleeve_cluster_linkage"),
        metrics_sql="select count(distinct cluster) as clusters from main.sleeve_clusters",
    ),
    Step(
        "optimization",
        "HRP / MinVar / MaxSharpe / equal weight with the stable-sum gate",
        ("sleeve_weights", "sleeve_optimizers"),
        metrics_sql="select any_value(method) filter (where is_chosen) as method_in_use, "
        "bool_or(fallback_used) as fallback_used, count(*) filter (where gate_passed) as "
        "methods_passed from main.sleeve_optimizers",
    ),
    Step(
        "sign_test",
        "directional sign test after optimization (returns and weights)",
        ("sleeve_sign_test",),
        metrics_sql="select status, error_findings from main.sleeve_sign_test",
    ),
    Step(
        "reporting",
        "weights CSV and table, tearsheet",
        ("sleeve_portfolio",),
        metrics_sql="select count(*) as holdings, sum(weight) as weight_sum "
        "from main.sleeve_portfolio",
    ),
    Step(
        "validation",
        "walk-forward backtest over the features matrix as of each rebalance date",
        ("sleeve_backtest", "sleeve_backtest_metrics"),
        skip_flag="skip_validation",
        metrics_sql="select max(value) filter (where metric = 'sharpe') as sharpe, "
        "max(value) filter (where metric = 'max_drawdown') as max_drawdown "
        "from main.sleeve_backtest_metrics",
    ),
    Step(
        "post_analysis",
        "post-analysis plots",
        ("sleeve_post_analysis",),
        skip_flag="skip_analysis",
        metrics_sql="select count(*) as plots from main.sleeve_post_analysis",
    ),
)
STEP_NAMES = tuple(step.name for step in STEPS)


def skip_reason(step: Step, params: RunParams) -> str | None:
    if step.skip_flag and getattr(params, step.skip_flag):
        return f"--{step.skip_flag.replace('_', '-')} given"
    return None


# -- the run manifest ----------------------------------------------------------------------------


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class StageRecord:
    name: str
    models: list[str]
    status: str = "pending"  # pending | running | success | failed | skipped | not_run
    started_at: str | None = None
    ended_at: str | None = None
    seconds: float | None = None
    error: str | None = None
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunManifest:
    """`run_manifest.json`: the run and its stages, saved atomically after every change."""

    path: Path
    run_id: str
    profile: str
    params: dict[str, Any]
    warehouse: str
    stages: list[StageRecord]
    status: str = "running"
    created_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    failed_step: str | None = None
    error: str | None = None
    peak_rss_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    def save(self) -> None:
        write_json_atomically(self.path, jsonable(self.to_dict()))

    def stage(self, name: str) -> StageRecord:
        return next(stage for stage in self.stages if stage.name == name)

    def start(self, name: str) -> float:
        stage = self.stage(name)
        stage.status, stage.started_at = "running", utc_now()
        self.save()
        return time.perf_counter()

    def finish(self, name: str, status: str, started: float, **details: Any) -> None:
        stage = self.stage(name)
        stage.status, stage.ended_at = status, utc_now()
        stage.seconds = round(time.perf_counter() - started, 3)
        for key, value in details.items():
            setattr(stage, key, value)
        self.save()

    def skip(self, name: str, status: str, reason: str) -> None:
        stage = self.stage(name)
        stage.status, stage.reason = status, reason
        self.save()

    def close(self, failed_step: str | None, error: str | None) -> None:
        self.status = "failed" if failed_step else "success"
        self.failed_step, self.error, self.finished_at = failed_step, error, utc_now()
        # Linux reports KiB: the run's peak memory, dbt and the models included (one process).
        self.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        self.save()


def read_manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / MANIFEST_FILE).read_text())


def stage_detail(stage: Mapping[str, Any]) -> str:
    """A stage's reason, error or metrics in one line (numbers to 4 significant digits)."""
    if stage.get("reason") or stage.get("error"):
        return str(stage.get("reason") or stage.get("error"))
    metrics = {k: v for k, v in stage.get("metrics", {}).items() if k != "tables"}
    return ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in metrics.items()
    )


def outcome_counts(outcomes: list[dict[str, Any]]) -> str:
    """Audit outcome records counted by status, e.g. '9 success, 1 skipped'."""
    counts = Counter(str(record["status"]) for record in outcomes)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"


# -- dbt on the run target -----------------------------------------------------------------------


@contextmanager
def _run_target_env(run_db: Path, warehouse: Path) -> Iterator[None]:
    """The environment the `run` target reads: the run database and the warehouse to attach."""
    saved = {name: os.environ.get(name) for name in (RUN_DB_ENV, WAREHOUSE_ENV)}
    os.environ[RUN_DB_ENV] = str(run_db)
    os.environ[WAREHOUSE_ENV] = str(warehouse)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class RunDbt:
    """dbt on the `run` target of one run: its own target and log folders, one parse per run.

    Not `quantwarehouse.dbt.run_dbt`: that one counts rows written by opening the warehouse
    read-write, which a sleeve run must never do.
    """

    def __init__(self, params: RunParams, warehouse: Path, *, echo: bool = False) -> None:
        self.params = params
        self.warehouse = warehouse
        self.echo = echo
        self.run_db = params.run_dir / RUN_DB_FILE
        self.target_path = params.run_dir / "dbt" / "target"
        self.log_path = params.run_dir / "dbt" / "logs"
        self.manifest: Any = None

    def _args(self, args: list[str]) -> list[str]:
        return dbt_args(
            [*args, "--target", RUN_TARGET],
            variables=self.params.dbt_vars(),
            echo=self.echo,
            target_path=self.target_path,
            log_path=self.log_path,
        )

    def parse(self) -> None:
        with _run_target_env(self.run_db, self.warehouse):
            outcome = invoke_dbt(self._args(["parse"]))
        if not outcome.success or outcome.result is None:
            raise DbtRunError(f"dbt parse failed: {one_line(str(outcome.exception))}")
        self.manifest = outcome.result

    def build(self, models: tuple[str, ...]) -> DbtResult:
        """`dbt build` of the models (and their tests); raise DbtRunError naming failing nodes."""
        from dbt_common.invocation import get_invocation_id

        started = time.perf_counter()
        with _run_target_env(self.run_db, self.warehouse):
            outcome = invoke_dbt(self._args(["build", "--select", *models]), manifest=self.manifest)
        if isinstance(outcome.exception, KeyboardInterrupt):  # dbtRunner returns it, we stop
            raise outcome.exception
        if outcome.exception is not None:
            raise DbtRunError(f"dbt build could not run: {one_line(str(outcome.exception))}")
        nodes = tuple(node_result(r) for r in getattr(outcome.result, "results", None) or [])
        result = DbtResult(
            ("build", *models), get_invocation_id(), nodes, time.perf_counter() - started
        )
        failures = result.failures
        if failures:
            raise DbtRunError("; ".join(_failure_text(node) for node in failures), result)
        built = {node.name for node in result.models}
        if not outcome.success or built != set(models):
            missing = ", ".join(sorted(set(models) - built)) or "none"
            raise DbtRunError(f"dbt build did not succeed (models not built: {missing})", result)
        return result

    def relations(self, models: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
        """(inputs, outputs) of these models: relation names of what they read and write."""
        nodes = {node.name: node for node in self.manifest.nodes.values()}
        outputs = {name: nodes[name].relation_name for name in models}
        inputs: dict[str, str] = {}
        for name in models:
            for upstream in nodes[name].depends_on.nodes:
                if upstream in self.manifest.sources:
                    source = self.manifest.sources[upstream]
                    inputs[f"source {source.source_name}.{source.name}"] = source.relation_name
                elif self.manifest.nodes[upstream].name not in models:
                    node = self.manifest.nodes[upstream]
                    inputs[node.name] = node.relation_name
        return dict(sorted(inputs.items())), outputs


# The exception a failing Python model raised, at the end of dbt's message after the traceback.
RAISED = re.compile(r"\b[A-Z]\w*(?:Error|Exception|Exit): ")


def _failure_text(node: NodeResult) -> str:
    """A failing node's message; for a Python model, the exception it raised, not the traceback."""
    message = node.message or node.status
    if "Traceback (most recent call last)" in message:
        raised = list(RAISED.finditer(message))
        if raised:
            message = message[raised[-1].start() :]
    return f"{node.resource_type} {node.name}: {one_line(message)}"


# -- hashes and metrics of the run's tables ------------------------------------------------------

# Order-independent content hash of a table: its row count and the sum of DuckDB's 64-bit hash
# of every whole row (a sum, not an xor, so that two equal rows do not cancel out). Fast enough
# for the warehouse's largest tables; the values are DuckDB's (its version is in the genesis).
TABLE_HASH_SQL = "select count(*), coalesce(sum(hash(t)::hugeint), 0) from {relation} as t"


@contextmanager
def run_database(run_db: Path, warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The run database with the warehouse attached read-only, as the `run` target sees them."""
    con = duckdb.connect(str(run_db))
    try:
        con.execute(f"attach '{warehouse}' as wh (read_only)")
        yield con
    finally:
        con.close()


ABSENT = "absent"


def table_hash(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    """(rows, sha256 of the rows and the row-hash sum) of one table."""
    rows, total = con.execute(TABLE_HASH_SQL.format(relation=relation)).fetchone()
    return int(rows), hashlib.sha256(f"{rows}:{total}".encode()).hexdigest()


def combined_hash(hashes: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(hashes), sort_keys=True).encode()).hexdigest()


def step_metrics(con: duckdb.DuckDBPyConnection, step: Step) -> dict[str, Any]:
    if not step.metrics_sql:
        return {}
    cursor = con.execute(step.metrics_sql)
    names = [column[0] for column in cursor.description]
    row = cursor.fetchone() or [None] * len(names)
    return {name: jsonable(value) for name, value in zip(names, row, strict=True)}


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, DbtRunError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return one_line(f"{type(exc).__name__}: {exc}")


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductionOptions:
    profile: str
    run_id: str | None = None
    skip_validation: bool = False
    skip_analysis: bool = False
    inject_sign_error: str = ""
    verbose: bool = False


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    profile: str
    manifest: RunManifest
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.manifest.status == "success"

    def summary_lines(self) -> list[str]:
        m = self.manifest
        lines = [
            f"production {self.run_id} (profile {self.profile}): {m.status} in {self.seconds:.1f}s",
            f"run directory: {self.run_dir}",
        ]
        for stage in m.stages:
            timing = f" in {stage.seconds:.1f}s" if stage.seconds is not None else ""
            detail = stage_detail(asdict(stage))
            lines.append(
                f"step {stage.name}: {stage.status}{timing}" + (f" ({detail})" if detail else "")
            )
        artifacts = sorted(
            p.relative_to(self.run_dir).as_posix()
            for p in self.run_dir.rglob("*")
            if p.is_file() and p.relative_to(self.run_dir).parts[0] != "dbt"
        )
        lines.append(f"artifacts: {', '.join(artifacts)}")
        return lines


@dataclass(frozen=True)
class PreparedRun:
    profile: Profile
    params: RunParams
    warehouse: Path


def prepare_run(options: ProductionOptions) -> PreparedRun:
    """Validate the profile, the run id and the warehouse; nothing is written."""
    profile = load_profile(options.profile)
    run_id = (
        validate_run_id(options.run_id) if options.run_id is not None else new_run_id(profile.name)
    )
    warehouse = warehouse_path()
    if not warehouse.exists():
        raise RunSetupError(f"no warehouse at {warehouse}: run `orchestrate.py ingest` first")
    run_dir = runs_dir() / run_id
    if run_dir.exists():
        raise RunSetupError(
            f"run directory {run_dir} already exists: every run needs its own run id "
            "(leave --run-id out for a generated one)"
        )
    params = RunParams(
        profile_file=run_dir / f"{profile.name}.yml",
        run_id=run_id,
        run_dir=run_dir,
        skip_validation=options.skip_validation,
        skip_analysis=options.skip_analysis,
        inject_sign_error=options.inject_sign_error,
    )
    return PreparedRun(profile, params, warehouse)


def check_warehouse_tables(warehouse: Path) -> None:
    """The tables the sleeves read exist and hold rows (read-only)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        present = {
            name
            for (name,) in con.execute(
                "select table_name from information_schema.tables where table_schema = 'main'"
            ).fetchall()
        }
        absent = [t for t in REQUIRED_TABLES if t not in present]
        empty = [t for t in REQUIRED_TABLES if t in present and _is_empty(con, t)]
    if absent or empty:
        problems = [f"main.{t} does not exist" for t in absent]
        problems += [f"main.{t} is empty" for t in empty]
        raise RunSetupError(
            f"the warehouse {warehouse} cannot feed a sleeve run: {'; '.join(problems)}; build "
            "it first (`orchestrate.py daily-refresh --all`)"
        )


def _is_empty(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return con.execute(f"select count(*) = 0 from (select 1 from main.{table} limit 1)").fetchone()[
        0
    ]


def plan_lines(prepared: PreparedRun) -> list[str]:
    """What a run would do (--dry-run): nothing is read beyond the profile, nothing written."""
    p = prepared.params
    lines = [
        f"dry run: production of profile {prepared.profile.name} ({prepared.profile.path})",
        f"  run id {p.run_id}; run directory {p.run_dir} (not created)",
        f"  warehouse {prepared.warehouse}, attached read-only",
    ]
    for number, step in enumerate(STEPS, start=1):
        reason = skip_reason(step, p)
        state = f"skipped ({reason})" if reason else f"dbt build --select {' '.join(step.models)}"
        lines.append(f"  step {number} {step.name}: {step.does}: {state}")
    return lines


def environment() -> dict[str, Any]:
    """Where and with what the run ran (the audit genesis record)."""
    return {
        **environment_info(),
        "host": platform.node(),
        "pid": os.getpid(),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ProductionRun:
    """Runs the steps of one prepared run inside its run directory."""

    def __init__(self, prepared: PreparedRun, *, echo: bool = False) -> None:
        self.prepared = prepared
        self.params = prepared.params
        self.dbt = RunDbt(self.params, prepared.warehouse, echo=echo)
        self.audit = AuditTrail(self.params.run_dir / AUDIT_FILE)
        self.manifest = RunManifest(
            path=self.params.run_dir / MANIFEST_FILE,
            run_id=self.params.run_id,
            profile=prepared.profile.name,
            params=self.params.dbt_vars(),
            warehouse=str(prepared.warehouse),
            stages=[StageRecord(step.name, list(step.models)) for step in STEPS],
        )
        self.hashes: dict[str, str] = {}

    def create(self) -> None:
        """The run directory, the profile snapshot, the manifest and the genesis record."""
        p = self.params
        p.run_dir.mkdir(parents=True)
        shutil.copyfile(self.prepared.profile.path, p.profile_file)
        self.manifest.save()
        config = {
            "profile": self.prepared.profile.to_dict(),
            "profile_file": str(self.prepared.profile.path),
            "profile_sha256": file_sha256(p.profile_file),
            "dbt_target": RUN_TARGET,
            "dbt_vars": p.dbt_vars(),
            "warehouse": str(self.prepared.warehouse),
            "steps": [asdict(step) | {"models": list(step.models)} for step in STEPS],
        }
        self.audit.genesis(p.run_id, self.prepared.profile.name, environment(), config)

    def run(self) -> None:
        failed: tuple[str, str] | None = None
        try:
            self.dbt.parse()
        except DbtRunError as exc:
            failed = ("dbt parse", str(exc))
        for step in STEPS:
            reason = skip_reason(step, self.params)
            if failed is not None:
                self.manifest.skip(step.name, "not_run", f"step {failed[0]} failed")
            elif reason is not None:
                self._record_skip(step, reason)
            else:
                error = self._run_step(step)
                if error is not None:
                    failed = (step.name, error)
        self.manifest.close(*(failed or (None, None)))
        self.audit.close(self.manifest.status)

    def _record_skip(self, step: Step, reason: str) -> None:
        self.manifest.skip(step.name, "skipped", reason)
        self.audit.intent(step.name, {"models": list(step.models), "skipped": reason})
        self.audit.outcome(step.name, "skipped", None, None, {"reason": reason})
        log.info("step %s: skipped (%s)", step.name, reason)

    def _run_step(self, step: Step) -> str | None:
        """Run one step; its error message when it failed (an interruption is recorded, then
        raised on: the manifest and the trail then end with the step that was cut short)."""
        inputs, outputs = self.dbt.relations(step.models)
        self.audit.intent(
            step.name, {"does": step.does, "models": list(step.models), "inputs": inputs}
        )
        log.info("step %s: %s", step.name, step.does)
        started = self.manifest.start(step.name)
        inputs_hash = None
        try:
            inputs_hash = combined_hash(self._hashes(inputs))
            result = self.dbt.build(step.models)
            metrics, output_hashes = self._outputs(step, outputs)
        except BaseException as exc:  # dbt's failure or ours: recorded, and the run stops
            error = _error_text(exc)
            self.manifest.finish(step.name, "failed", started, error=error)
            self.audit.outcome(step.name, "failure", inputs_hash, None, {"error": error})
            log.error("step %s failed: %s", step.name, error)
            if not isinstance(exc, Exception):
                self.manifest.close(step.name, error)
                self.audit.close(self.manifest.status)
                raise
            return error
        metrics["dbt_seconds"] = round(result.seconds, 3)
        self.manifest.finish(step.name, "success", started, metrics=metrics)
        self.audit.outcome(step.name, "success", inputs_hash, combined_hash(output_hashes), metrics)
        return None

    def _hashes(self, relations: Mapping[str, str]) -> dict[str, str]:
        """Content hashes of the relations; a table a skipped step did not write is 'absent'."""
        unknown = [r for r in relations.values() if r not in self.hashes]
        if unknown:
            with run_database(self.dbt.run_db, self.prepared.warehouse) as con:
                for relation in unknown:
                    try:
                        self.hashes[relation] = table_hash(con, relation)[1]
                    except duckdb.CatalogException:
                        self.hashes[relation] = ABSENT
        return {name: self.hashes[relation] for name, relation in relations.items()}

    def _outputs(
        self, step: Step, outputs: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        tables: dict[str, int] = {}
        hashes: dict[str, str] = {}
        with run_database(self.dbt.run_db, self.prepared.warehouse) as con:
            for name, relation in outputs.items():
                tables[name], hashes[name] = table_hash(con, relation)
                self.hashes[relation] = hashes[name]
            metrics = step_metrics(con, step)
        return {**metrics, "tables": tables}, hashes


def run_production(options: ProductionOptions, prepared: PreparedRun | None = None) -> RunOutcome:
    """One sleeve run, start to end, under a reader lock on the warehouse."""
    from quantwarehouse import reports  # reports builds on this module: imported when used

    prepared = prepared or prepare_run(options)
    params = prepared.params
    started = time.perf_counter()
    with ReaderLock(
        prepared.warehouse, params.run_id, f"production --profile {prepared.profile.name}"
    ):
        check_warehouse_tables(prepared.warehouse)
        run = ProductionRun(prepared, echo=options.verbose)
        run.create()
        handler = _run_log_handler(params.run_dir / LOG_FILE)
        try:
            run.run()
        finally:  # an interrupted run gets its INDEX.md too, saying where it stopped
            logging.getLogger().removeHandler(handler)
            handler.close()
            reports.write_index(params.run_dir, run.manifest.to_dict())
    seconds = time.perf_counter() - started
    return RunOutcome(params.run_id, params.run_dir, prepared.profile.name, run.manifest, seconds)


def _run_log_handler(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler
