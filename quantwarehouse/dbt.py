"""How the project runs dbt: in-process through `dbtRunner`, on the project's own folders and on
the warehouse of `quantwarehouse.paths.warehouse_path()`.

`run_dbt(["build", "--select", "returns"])` returns one `NodeResult` per node (status, rows
written, seconds) and raises `DbtRunError`, naming every failing model or test, when dbt fails.
Between invocations the DuckDB file is released, so other connections (this process's or another
one's) can open it as soon as a call returns.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quantwarehouse.paths import DBT_PROJECT_DIR, WAREHOUSE_ENV, warehouse_path

FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
# Materializations whose rows carry the `invocation_id` that wrote them (the incremental contract).
INVOCATION_TAGGED = frozenset({"incremental"})


def one_line(text: str) -> str:
    """dbt's multi-line messages (SQL excerpts, carets) as one line, for logs and last lines."""
    return " ".join(text.split())


@dataclass(frozen=True)
class NodeResult:
    """The outcome of one dbt node (model, test, unit test, seed, source freshness check)."""

    name: str
    resource_type: str
    status: str
    seconds: float
    message: str | None = None
    rows_written: int | None = None
    materialized: str | None = None
    relation: str | None = None
    tested_model: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def describe(self) -> str:
        what = f"{self.resource_type} {self.name}"
        if self.tested_model:
            what += f" (on {self.tested_model})"
        detail = f": {one_line(self.message)}" if self.message else ""
        return f"{what} [{self.status}]{detail}"


@dataclass(frozen=True)
class DbtResult:
    args: tuple[str, ...]
    invocation_id: str
    nodes: tuple[NodeResult, ...]
    seconds: float

    @property
    def models(self) -> tuple[NodeResult, ...]:
        return tuple(node for node in self.nodes if node.resource_type == "model")

    @property
    def failures(self) -> tuple[NodeResult, ...]:
        return tuple(node for node in self.nodes if node.failed)


class DbtRunError(RuntimeError):
    """dbt could not run, or a node failed; the message names every failing node."""

    def __init__(self, message: str, result: DbtResult | None = None) -> None:
        super().__init__(message)
        self.result = result


NodeCallback = Callable[[NodeResult], None]


@contextmanager
def _warehouse_env(warehouse: Path) -> Iterator[None]:
    """Point the dbt profile at the warehouse for the duration of one call."""
    previous = os.environ.get(WAREHOUSE_ENV)
    os.environ[WAREHOUSE_ENV] = str(warehouse)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(WAREHOUSE_ENV, None)
        else:
            os.environ[WAREHOUSE_ENV] = previous


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open between invocations of one process."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        environment = DuckDBConnectionManager._ENV
        if environment is not None:
            environment.close()
        DuckDBConnectionManager.close_all_connections()


def invoke_dbt(
    full_args: Sequence[str],
    *,
    manifest: Any = None,
    callbacks: Sequence[Callable[[Any], None]] = (),
) -> Any:
    """One dbtRunner call (dbt's dbtRunnerResult back), the environment set by the caller; the
    DuckDB database dbt-duckdb keeps open between calls is closed afterwards, so that the next
    opener of the file (another process, a read-only connection) is not refused."""
    from dbt.cli.main import dbtRunner

    try:
        return dbtRunner(manifest=manifest, callbacks=list(callbacks)).invoke(list(full_args))
    finally:
        _release_duckdb()


def dbt_args(
    args: Sequence[str],
    *,
    variables: Mapping[str, Any] | None = None,
    echo: bool = False,
    target_path: Path | None = None,
    log_path: Path | None = None,
    write_json: bool = True,
) -> list[str]:
    """The full argument list of one call: the project's folders always, the rest as asked.
    `write_json=False`: no manifest.json / run_results.json in the target folder (writing the
    manifest costs about half a second per call; the results come back in memory anyway)."""
    full = [*args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    if not write_json:
        full.append("--no-write-json")
    if variables:
        full += ["--vars", json.dumps(dict(variables), sort_keys=True)]
    if not echo:
        # Silent on the console; dbt.log keeps its usual detail (its level follows the console's).
        full += ["--log-level", "none", "--log-level-file", "debug"]
    if target_path is not None:
        full += ["--target-path", str(target_path)]
    if log_path is not None:
        full += ["--log-path", str(log_path)]
    return full


def node_result(run_result: Any) -> NodeResult:
    """One node's outcome from dbt's run result."""
    node = run_result.node
    config = getattr(node, "config", None)
    attached = getattr(node, "attached_node", None)
    return NodeResult(
        name=node.name,
        resource_type=str(node.resource_type),
        status=str(run_result.status),
        seconds=float(run_result.execution_time or 0.0),
        message=run_result.message,
        materialized=getattr(config, "materialized", None),
        relation=getattr(node, "relation_name", None),
        tested_model=attached.split(".")[-1] if attached else None,
    )


def _node_result_from_event(event: Any) -> NodeResult:
    info = event.data.node_info
    run_result = event.data.run_result
    return NodeResult(
        name=info.node_name,
        resource_type=info.resource_type,
        status=run_result.status or info.node_status,
        seconds=float(run_result.execution_time or 0.0),
        message=run_result.message or None,
        materialized=info.materialized or None,
    )


def _rows_written(nodes: list[NodeResult], invocation_id: str, warehouse: Path) -> list[NodeResult]:
    """Fill in rows written: this invocation's rows of incremental models, all rows of tables."""
    counted = [
        n
        for n in nodes
        if n.resource_type == "model" and not n.failed and n.relation and n.status == "success"
    ]
    if not counted or not warehouse.exists():
        return nodes
    import duckdb

    rows: dict[str, int] = {}
    # Not read-only: a caller's own read-write connection to the file must be able to coexist.
    with duckdb.connect(str(warehouse)) as con:
        for node in counted:
            if node.materialized in INVOCATION_TAGGED:
                sql = f"select count(*) from {node.relation} where invocation_id = ?"
                rows[node.name] = con.execute(sql, [invocation_id]).fetchone()[0]
            elif node.materialized == "table":
                rows[node.name] = con.execute(f"select count(*) from {node.relation}").fetchone()[0]
    return [replace(n, rows_written=rows[n.name]) if n.name in rows else n for n in nodes]


def _failure_message(command: str, failures: Sequence[NodeResult]) -> str:
    names = ", ".join(f"{n.resource_type} {n.name}" for n in failures)
    details = "; ".join(n.describe() for n in failures)
    return f"dbt {command} failed in {names}: {details}"


def run_dbt(
    args: Sequence[str],
    *,
    variables: Mapping[str, Any] | None = None,
    echo: bool = False,
    on_node_done: NodeCallback | None = None,
    target_path: Path | None = None,
    log_path: Path | None = None,
    manifest: Any = None,
    write_json: bool = True,
) -> DbtResult:
    """Run one dbt command in-process on the warehouse; raise `DbtRunError` when anything fails.

    `echo` lets dbt print its own log lines; `on_node_done` is called as each node finishes.
    `target_path` and `log_path` default to `DBT_TARGET_PATH` / `DBT_LOG_PATH` when set, else to
    the project's `target/` and `logs/`. `manifest` (from `parse_project`) skips parsing.
    """
    from dbt_common.invocation import get_invocation_id

    warehouse = warehouse_path()
    full = dbt_args(
        args,
        variables=variables,
        echo=echo,
        target_path=target_path,
        log_path=log_path,
        write_json=write_json,
    )

    def forward(event: Any) -> None:
        if on_node_done is not None and event.info.name == "NodeFinished":
            on_node_done(_node_result_from_event(event))

    started = time.perf_counter()
    with _warehouse_env(warehouse):
        outcome = invoke_dbt(full, manifest=manifest, callbacks=[forward])
    seconds = time.perf_counter() - started
    command = args[0] if args else "dbt"
    if outcome.exception is not None:
        message = f"dbt {command} could not run: {one_line(str(outcome.exception))}"
        raise DbtRunError(message) from outcome.exception
    invocation_id = get_invocation_id()
    raw_results = getattr(outcome.result, "results", None) or []
    nodes = _rows_written([node_result(r) for r in raw_results], invocation_id, warehouse)
    result = DbtResult(tuple(args), invocation_id, tuple(nodes), seconds)
    if result.failures:
        raise DbtRunError(_failure_message(command, result.failures), result)
    if not outcome.success:
        raise DbtRunError(f"dbt {command} did not succeed (no failing node reported)", result)
    return result


def list_nodes(
    select: Sequence[str],
    *,
    resource_type: str = "model",
    variables: Mapping[str, Any] | None = None,
    target_path: Path | None = None,
    manifest: Any = None,
) -> list[dict[str, Any]]:
    """The selected nodes in dbt's order (`dbt ls`), without touching the warehouse.
    `manifest` (from `parse_project`) skips parsing."""
    args = ["ls", "--select", *select, "--resource-type", resource_type]
    args += ["--output", "json", "--output-keys", "name", "resource_type", "config"]
    full = dbt_args(args, variables=variables, target_path=target_path, write_json=False)
    with _warehouse_env(warehouse_path()):
        outcome = invoke_dbt(full, manifest=manifest)
    if outcome.exception is not None or not outcome.success:
        raise DbtRunError(f"dbt ls --select {' '.join(select)} failed: {outcome.exception}")
    return [json.loads(line) for line in outcome.result or []]


def parse_project(*, target_path: Path | None = None, write_json: bool = True) -> Any:
    """Parse the project once and return dbt's manifest, to pass to many `run_dbt` calls.

    The manifest names relations after the warehouse file's stem: reuse it only for warehouses
    whose file has the same name as the one `warehouse_path()` gives now. Vars are read when each
    call compiles, so calls with different vars can share it. dbt's partial parsing file is kept
    up to date whatever `write_json` says (see `dbt_args`).
    """
    with _warehouse_env(warehouse_path()):
        outcome = invoke_dbt(dbt_args(["parse"], target_path=target_path, write_json=write_json))
    if not outcome.success or outcome.result is None:
        raise DbtRunError(f"dbt parse failed: {outcome.exception}")
    return outcome.result
