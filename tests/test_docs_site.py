"""`orchestrate.py docs` on a small built warehouse: the site is generated and served over HTTP, its
lineage graph renders the project's models in headless Chromium, every model, column and source is
described; plus the exposures and the example analyses (dbt_project/analyses) it documents."""

from __future__ import annotations

import html
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from quantwarehouse.dbt import list_nodes
from quantwarehouse.docs_site import LINEAGE_FRAGMENT, SITE_FILES
from quantwarehouse.lakehouse import RETURNS_MATRIX_FILE
from quantwarehouse.lakehouse_features import FEATURES_MATRIX_FOLDER
from quantwarehouse.lock import WriterLock
from quantwarehouse.paths import DBT_PROJECT_DIR, REPO_ROOT
from quantwarehouse.refresh.runner import TARGET_ORDER, target_steps
from quantwarehouse.refresh.steps import DbtStep
from tests.conftest import run_cli

PROJECT = "quantwarehouse"
ARTIFACTS = REPO_ROOT / "test-artifacts"
SERVING = re.compile(r"serving the docs at (http://\S+/) ")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,900",
    "--virtual-time-budget=20000",
)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# -- failing fast, before dbt runs --------------------------------------------------------------


def test_docs_without_a_warehouse_is_a_clear_error(data_dir):
    result = run_cli("docs", "--no-serve")
    assert result.returncode == 2
    assert "no warehouse at" in last_line(result.stderr)
    assert not (data_dir / "warehouse.duckdb").exists()


def test_docs_on_a_busy_port_fails_at_once(warehouse):
    duckdb.connect(str(warehouse)).close()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("docs", "--port", str(port), timeout=60)
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"error: port {port} on 127.0.0.1 is already in use: choose another with --port "
        "(--port 0 picks a free one)"
    )


def test_docs_while_a_writer_runs_names_the_writer(warehouse):
    duckdb.connect(str(warehouse)).close()
    with WriterLock(warehouse, "refresh-in-progress", "daily-refresh"):
        result = run_cli("docs", "--no-serve", timeout=60)
    assert result.returncode == 3
    assert "refresh-in-progress" in last_line(result.stderr)
    assert "command 'daily-refresh'" in last_line(result.stderr)


def test_port_must_be_a_port_number(warehouse):
    result = run_cli("docs", "--port", "70000")
    assert result.returncode == 2
    assert "expected a port number from 0 to 65535, got '70000'" in last_line(result.stderr)


# -- the site, generated and served by the command ----------------------------------------------


@pytest.fixture(scope="module")
def built_warehouse(tmp_path_factory: pytest.TempPathFactory, dbt_workdir: Path) -> Iterator[Path]:
    """Synthetic `tiny` data with bars, returns and marts built, so the catalog has columns."""
    folder = tmp_path_factory.mktemp("docs-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWH_DATA_DIR", str(folder))
        patch.delenv("QWH_WAREHOUSE", raising=False)
        run_cli("ingest", "--source", "synthetic", "--preset", "tiny", check=True)
        run_cli("daily-refresh", "--bars", "--returns", check=True)
        yield folder / "warehouse.duckdb"


@dataclass
class DocsServer:
    process: subprocess.Popen[str]
    url: str
    target: Path
    output: list[str]
    reader: threading.Thread

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.target / "manifest.json").read_text())

    def catalog(self) -> dict[str, Any]:
        return json.loads((self.target / "catalog.json").read_text())


def _collect_output(
    process: subprocess.Popen[str], lines: list[str], found: threading.Event
) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if SERVING.search(line):
            found.set()
    found.set()


@pytest.fixture(scope="module")
def docs_server(built_warehouse: Path, dbt_workdir: Path) -> Iterator[DocsServer]:
    """`orchestrate.py docs --port 0` running in its own process, as a user starts it."""
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "orchestrate.py"), "docs", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
    )
    lines: list[str] = []
    found = threading.Event()
    reader = threading.Thread(target=_collect_output, args=(process, lines, found), daemon=True)
    reader.start()
    found.wait(timeout=300)
    match = next((m for m in map(SERVING.search, lines) if m), None)
    if match is None:
        process.kill()
        pytest.fail("orchestrate.py docs printed no address:\n" + "".join(lines))
    server = DocsServer(process, match.group(1), dbt_workdir / "target", lines, reader)
    yield server
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_generated_target_folder_is_served(docs_server):
    assert docs_server.url.startswith("http://127.0.0.1:")
    for name in SITE_FILES:
        with urllib.request.urlopen(docs_server.url + name, timeout=10) as response:
            assert response.read() == (docs_server.target / name).read_bytes()
            assert response.headers["Cache-Control"] == "no-store"
    assert any(LINEAGE_FRAGMENT in line for line in docs_server.output)


def undescribed(manifest: dict[str, Any], catalog: dict[str, Any]) -> list[str]:
    """Every model, source and column (declared in YAML or present in the warehouse) without a
    description."""
    missing: list[str] = []

    def check_columns(owner: str, declared: dict[str, Any], stored: dict[str, Any]) -> None:
        described = {name.lower(): column["description"] for name, column in declared.items()}
        for name in sorted(set(described) | {name.lower() for name in stored}):
            if not described.get(name, "").strip():
                missing.append(f"column {owner}.{name}")

    for unique_id, node in sorted(manifest["nodes"].items()):
        if node["resource_type"] != "model" or node["package_name"] != PROJECT:
            continue
        if not node["description"].strip():
            missing.append(f"model {node['name']}")
        stored = catalog["nodes"].get(unique_id, {}).get("columns", {})
        check_columns(node["name"], node["columns"], stored)
    for unique_id, source in sorted(manifest["sources"].items()):
        name = f"{source['source_name']}.{source['name']}"
        if not source["source_description"].strip():
            missing.append(f"source {source['source_name']}")
        if not source["description"].strip():
            missing.append(f"source table {name}")
        stored = catalog["sources"].get(unique_id, {}).get("columns", {})
        check_columns(name, source["columns"], stored)
    return sorted(set(missing))


def test_undescribed_lists_what_lacks_a_description():
    manifest = {
        "nodes": {
            "model.quantwarehouse.a": {
                "resource_type": "model",
                "package_name": PROJECT,
                "name": "a",
                "description": "Model a.",
                "columns": {"x": {"description": "X."}, "y": {"description": " "}},
            },
            "model.quantwarehouse.b": {
                "resource_type": "model",
                "package_name": PROJECT,
                "name": "b",
                "description": "",
                "columns": {},
            },
            "test.quantwarehouse.t": {"resource_type": "test", "package_name": PROJECT},
        },
        "sources": {
            "source.quantwarehouse.raw.k": {
                "source_name": "raw",
                "name": "k",
                "source_description": "Raw.",
                "description": "",
                "columns": {"c": {"description": "C."}},
            }
        },
    }
    catalog = {
        "nodes": {"model.quantwarehouse.a": {"columns": {"X": {}, "Z": {}}}},
        "sources": {"source.quantwarehouse.raw.k": {"columns": {"c": {}, "d": {}}}},
    }
    assert undescribed(manifest, catalog) == [
        "column a.y",
        "column a.z",
        "column raw.k.d",
        "model b",
        "source table raw.k",
    ]


def test_every_model_column_and_source_is_described(docs_server):
    missing = undescribed(docs_server.manifest(), docs_server.catalog())
    assert not missing, f"{len(missing)} without a description:\n" + "\n".join(missing)


# -- the lineage graph in a real browser ---------------------------------------------------------

# The docs app draws its graph on a canvas with cytoscape.js; the graph service keeps the rendered
# cytoscape instance once the layout has run. A page of the same origin frames the app and writes
# what the graph holds into its own DOM, which `chromium --dump-dom` then prints.
LINEAGE_PROBE = """<!doctype html>
<html><body>
<iframe id="docs" src="index.html{fragment}" style="width:1400px;height:900px"></iframe>
<pre id="probe">pending</pre>
<script>
function probe() {{
  var out = document.getElementById('probe');
  try {{
    var app = document.getElementById('docs').contentWindow;
    var cy = app.angular.element(app.document.body).injector().get('graph').graph_element;
    if (cy && cy.nodes().length > 0) {{
      var shown = cy.nodes().filter(function (n) {{
        var p = n.renderedPosition();
        return n.visible() && p.x >= 0 && p.y >= 0 && p.x <= cy.width() && p.y <= cy.height();
      }});
      out.textContent = JSON.stringify(shown.map(function (n) {{ return n.id(); }}));
      return;
    }}
  }} catch (error) {{
    out.setAttribute('data-error', String(error));
  }}
  setTimeout(probe, 250);
}}
probe();
</script>
</body></html>
"""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "Chromium is not installed: run scripts/setup_test_deps.sh as root (apt-get install "
        "chromium) to run the browser test"
    )


def run_chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def graph_node_ids(dom: str) -> list[str]:
    match = re.search(r'<pre id="probe"([^>]*)>(.*?)</pre>', dom, re.S)
    assert match is not None, "the probe page did not load"
    content = html.unescape(match.group(2))
    assert content != "pending", f"the lineage graph never rendered: {match.group(1)}"
    return json.loads(content)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_lineage_graph_renders_the_projects_models(docs_server, tmp_path):
    (docs_server.target / "lineage-probe.html").write_text(
        LINEAGE_PROBE.format(fragment=LINEAGE_FRAGMENT)
    )
    dump = run_chromium(
        tmp_path / "profile-dom", "--dump-dom", docs_server.url + "lineage-probe.html"
    )
    assert dump.returncode == 0, dump.stderr[-2000:]
    shown = set(graph_node_ids(dump.stdout))

    manifest = docs_server.manifest()
    expected = {
        unique_id
        for unique_id, node in manifest["nodes"].items()
        if node["resource_type"] in ("model", "analysis") and node["package_name"] == PROJECT
    }
    expected |= set(manifest["exposures"]) | set(manifest["sources"])
    assert {"model.quantwarehouse.bars_1d", "exposure.quantwarehouse.daily_refresh"} <= expected
    assert expected - shown == set()

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "docs-lineage-graph.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(
        tmp_path / "profile-shot", f"--screenshot={screenshot}", docs_server.url + LINEAGE_FRAGMENT
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert png_size(screenshot) == (1400, 900)


# -- exposures -----------------------------------------------------------------------------------


def depends_on(exposure: dict[str, Any]) -> set[str]:
    return set(exposure["depends_on"]["nodes"])


def test_each_published_file_has_one_exposure_on_its_model(docs_server):
    exposures = docs_server.manifest()["exposures"].values()
    for file_name, model in (
        (RETURNS_MATRIX_FILE, "returns_daily"),
        (FEATURES_MATRIX_FOLDER, "features_matrix"),
    ):
        describing = [e for e in exposures if f"data/lakehouse/{file_name}" in e["description"]]
        assert len(describing) == 1, f"{file_name}: {[e['name'] for e in describing]}"
        assert depends_on(describing[0]) == {f"model.{PROJECT}.{model}"}


def test_daily_refresh_exposure_depends_on_every_model_it_builds(docs_server, tmp_path):
    selections = [
        part
        for target in TARGET_ORDER
        for step in target_steps(target, validate=False)
        if isinstance(step, DbtStep)
        for part in step.select
    ]
    nodes = list_nodes(selections, target_path=tmp_path / "target")
    built = {f"model.{PROJECT}.{node['name']}" for node in nodes}
    exposure = docs_server.manifest()["exposures"][f"exposure.{PROJECT}.daily_refresh"]
    assert depends_on(exposure) == built


# -- the example analyses ------------------------------------------------------------------------


def compiled_analysis(server: DocsServer, name: str) -> str:
    """The analysis as `dbt docs generate` compiled it (default vars)."""
    return (server.target / "compiled" / PROJECT / "analyses" / f"{name}.sql").read_text()


def run_query(sql: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    result = run_cli("sql", "-", "--format", "json", "--limit", "0", stdin=sql, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def daily_gaps(warehouse: Path) -> dict[str, list[tuple[date, date]]]:
    """Per symbol, (last day before, first day after) of every hole in its daily klines, read
    straight from raw.klines."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select distinct symbol, cast(open_time as date) from raw.klines "
            "where interval = '1d' order by 1, 2"
        ).fetchall()
    gaps: dict[str, list[tuple[date, date]]] = {}
    for (symbol, day), (next_symbol, next_day) in itertools.pairwise(rows):
        if symbol == next_symbol and next_day - day > timedelta(days=1):
            gaps.setdefault(symbol, []).append((day, next_day))
    return gaps


def midnight(day: date) -> str:
    return datetime.combine(day, datetime.min.time()).isoformat()


def test_gap_report_agrees_with_the_daily_klines(docs_server, built_warehouse):
    report = run_query(compiled_analysis(docs_server, "gap_report"))
    gaps = daily_gaps(built_warehouse)
    assert gaps, "the tiny preset schedules missing days"

    expected_klines = [
        {
            "symbol": symbol,
            "gap_source": "klines",
            "timeframe": "1d",
            "gap_count": len(holes),
            "missing_count": sum((after - before).days - 1 for before, after in holes),
            "missing_unit": "bars",
            "first_missing_at": midnight(holes[0][0] + timedelta(days=1)),
            "missing_until": midnight(holes[-1][1]),
        }
        for symbol, holes in sorted(gaps.items())
    ]
    assert [row for row in report if row["gap_source"] == "klines"] == expected_klines

    # Anchored calendar bars cover every day of a symbol's history (partial bars at both ends), so
    # over all its bars they miss exactly the days its daily klines miss.
    variables = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    anchored = {f"{tf}_anchor" for tf in variables["cal_anchor_timeframes"]}
    for family in ("bars_cal_anchor_us", "bars_cal_anchor_iso"):
        rows = {(r["symbol"], r["timeframe"]): r for r in report if r["gap_source"] == family}
        assert set(rows) == {(symbol, tf) for symbol in gaps for tf in anchored}
        for expected in expected_klines:
            for tf in anchored:
                row = rows[(expected["symbol"], tf)]
                assert row["missing_count"] == expected["missing_count"]
                assert row["missing_unit"] == "days"
                assert row["first_missing_at"] == expected["first_missing_at"]
                assert row["missing_until"] == expected["missing_until"]
                assert 1 <= row["gap_count"] <= expected["missing_count"]
    assert {r["symbol"] for r in report} == set(gaps)


# Hand-written ratings: (symbol, day, rating_all); day 2 of BBB is missing, CCC is warming up on
# day 2, DDD starts on day 3, FFF sits exactly on the all-long threshold.
D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
RATINGS = [
    ("AAA", D1, 0.0),
    ("AAA", D2, 0.5),
    ("AAA", D3, 0.25),
    ("BBB", D1, -0.5),
    ("BBB", D3, 0.375),
    ("CCC", D2, None),
    ("CCC", D3, 0.125),
    ("DDD", D3, -0.375),
    ("EEE", D2, -0.25),
    ("EEE", D3, -0.25),
    ("FFF", D1, -0.3),
]


@pytest.fixture(scope="module")
def ratings_warehouse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A warehouse named like the built one (compiled SQL names the database after the file)
    holding only a hand-written features_matrix; the environment that points commands at it."""
    path = tmp_path_factory.mktemp("ratings") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "create table main.features_matrix (symbol varchar, bar_date date, rating_all double)"
        )
        con.executemany("insert into main.features_matrix values (?, ?, ?)", RATINGS)
    return {"QWH_WAREHOUSE": str(path)}


def mover(
    rank: int, symbol: str, day: date, prev_day: date, prev: float, now: float
) -> dict[str, Any]:
    change = now - prev
    direction = "up" if change > 0 else "down" if change < 0 else "flat"
    return {
        "move_rank": rank,
        "symbol": symbol,
        "bar_date": day.isoformat(),
        "prev_bar_date": prev_day.isoformat(),
        "prev_rating_all": prev,
        "rating_all": now,
        "rating_change": change,
        "direction": direction,
    }


def test_top_movers_on_the_latest_day(docs_server, ratings_warehouse):
    rows = run_query(
        compiled_analysis(docs_server, "top_movers_by_rating_change"), ratings_warehouse
    )
    # Day 3: BBB +0.875 against day 1 (day 2 missing), AAA -0.25, EEE 0; CCC's previous rating is
    # null and DDD has no previous row.
    assert rows == [
        mover(1, "BBB", D3, D1, -0.5, 0.375),
        mover(2, "AAA", D3, D2, 0.5, 0.25),
        mover(3, "EEE", D3, D2, -0.25, -0.25),
    ]


def test_top_movers_with_vars_through_dbt_compile(ratings_warehouse, tmp_path):
    """The README's way to run an analysis: dbt compile -q --select ... | orchestrate.py sql -."""
    dbt = shutil.which("dbt", path=str(Path(sys.executable).parent))
    assert dbt is not None
    compiled = subprocess.run(
        [
            dbt,
            "compile",
            "-q",
            "--select",
            "top_movers_by_rating_change",
            "--vars",
            '{movers_as_of: "2024-03-02", movers_top_n: 1}',
            "--target-path",
            str(tmp_path / "target"),
            "--log-path",
            str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={
            **os.environ,
            **ratings_warehouse,
            "DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
            "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        },
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    # Day 2: AAA +0.5; EEE has no previous row, CCC's rating is null.
    assert run_query(compiled.stdout, ratings_warehouse) == [mover(1, "AAA", D2, D1, 0.0, 0.5)]


def test_sleeve_universe_keeps_ratings_above_minus_0_3(docs_server, ratings_warehouse):
    rows = run_query(compiled_analysis(docs_server, "sleeve_universe_by_day"), ratings_warehouse)
    kept = [
        (D1, "AAA", 0.0, 1, 1),
        (D2, "AAA", 0.5, 2, 1),
        (D2, "EEE", -0.25, 2, 2),
        (D3, "BBB", 0.375, 4, 1),
        (D3, "AAA", 0.25, 4, 2),
        (D3, "CCC", 0.125, 4, 3),
        (D3, "EEE", -0.25, 4, 4),
    ]
    assert rows == [
        {
            "bar_date": day.isoformat(),
            "symbol": symbol,
            "rating_all": rating,
            "universe_size": size,
            "universe_rank": rank,
        }
        for day, symbol, rating, size, rank in kept
    ]


# -- stopping ------------------------------------------------------------------------------------


def test_ctrl_c_stops_the_server(docs_server):
    """Last in this module: it stops the module's server."""
    docs_server.process.send_signal(signal.SIGINT)
    assert docs_server.process.wait(timeout=20) == 0
    docs_server.reader.join(timeout=10)
    assert "stopped" in docs_server.output[-1]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(docs_server.url, timeout=5)
