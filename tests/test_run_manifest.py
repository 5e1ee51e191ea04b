"""Run manifests and the stage cache (quantwarehouse/manifest.py): a whole JSON file after every
change, stage logs beside it, cache hits only for a successful stage with the same input hash."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from quantwarehouse.manifest import (
    MANIFEST_FILE,
    RunManifest,
    cache_enabled,
    cached_stage,
    hash_files,
    hash_parts,
    past_manifests,
    stage_file_name,
    typical_seconds,
    write_json_atomic,
)


def manifest_in(root: Path, run_id: str) -> RunManifest:
    return RunManifest(root / run_id, run_id, "daily-refresh", ["--bars"])


def test_every_change_leaves_a_whole_manifest_and_no_temporary_file(tmp_path):
    record = manifest_in(tmp_path, "20260101T000000Z_aaaaaa_refresh")
    record.plan(["ingest", "build bars"])
    on_disk = json.loads(record.path.read_text())
    assert on_disk["status"] == "running"
    assert [(s["name"], s["status"]) for s in on_disk["stages"]] == [
        ("ingest", "pending"),
        ("build bars", "pending"),
    ]
    record.start("ingest", "h1")
    record.finish("ingest", "success", seconds=1.5, outputs={"batch_id": 7})
    record.start("build bars", "h2")
    record.finish("build bars", "failed", seconds=0.2, error="dbt build failed in bars_1d")
    record.close("failed", "step 'build bars' failed")
    on_disk = json.loads(record.path.read_text())
    ingest, bars = on_disk["stages"]
    assert ingest["status"] == "success" and ingest["outputs"] == {"batch_id": 7}
    assert ingest["input_hash"] == "h1" and ingest["seconds"] == 1.5
    assert ingest["started_at"] <= ingest["finished_at"]
    assert bars["error"] == "dbt build failed in bars_1d"
    assert bars["log"] == "build_bars.log"
    assert on_disk["status"] == "failed" and on_disk["finished_at"] is not None
    assert sorted(p.name for p in record.folder.iterdir()) == [MANIFEST_FILE]


def test_a_failed_write_keeps_the_previous_manifest(tmp_path):
    path = tmp_path / "run" / MANIFEST_FILE
    write_json_atomic(path, {"status": "running"})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"status": "done", ("not", "a", "key"): 1})  # type: ignore[dict-item]
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in path.parent.iterdir()] == [MANIFEST_FILE]


def test_stage_log_keeps_the_lines_logged_during_the_stage(tmp_path):
    record = manifest_in(tmp_path, "r1")
    logger = logging.getLogger("test.stage")
    logger.setLevel(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    logger.info("before the stage")
    with record.stage_log("build bars") as path:
        logger.info("inside the stage")
        logger.debug("detail inside")
    logger.info("after the stage")
    text = path.read_text()
    assert "inside the stage" in text and "detail inside" in text
    assert "before the stage" not in text and "after the stage" not in text
    assert path == tmp_path / "r1" / "build_bars.log"


def test_cache_hits_only_successful_stages_with_the_same_hash(tmp_path):
    old = manifest_in(tmp_path, "20260101T000000Z_aaaaaa_refresh")
    old.start("build bars", "same")
    old.finish("build bars", "success", seconds=12.0)
    old.start("build emas", "same")
    old.finish("build emas", "failed", seconds=3.0, error="x")
    newer = manifest_in(tmp_path, "20260102T000000Z_bbbbbb_refresh")
    newer.start("build bars", "other")
    newer.finish("build bars", "success", seconds=4.0)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST_FILE).write_text("{not json")
    past = past_manifests(tmp_path, "daily-refresh", exclude="20260103T000000Z_cccccc_refresh")
    assert [p["run_id"] for p in past] == [newer.run_id, old.run_id]
    assert cached_stage(past, "build bars", "same") == old.run_id
    assert cached_stage(past, "build bars", "unknown") is None
    assert cached_stage(past, "build emas", "same") is None  # it failed
    assert typical_seconds(past, "build bars") == 4.0  # the newest success
    assert typical_seconds(past, "build emas") is None
    assert past_manifests(tmp_path, "ingest") == []
    assert past_manifests(tmp_path / "absent", "daily-refresh") == []


def test_hashes_change_with_content_and_names_only(tmp_path):
    (tmp_path / "a.sql").write_text("select 1")
    (tmp_path / "b.sql").write_text("select 2")
    files = [tmp_path / "a.sql", tmp_path / "b.sql"]
    first = hash_files(files, tmp_path)
    assert hash_files(list(reversed(files)), tmp_path) == first
    (tmp_path / "b.sql").write_text("select 3")
    assert hash_files(files, tmp_path) != first
    assert hash_parts([{"b": 1, "a": 2}]) == hash_parts([{"a": 2, "b": 1}])
    assert hash_parts([1, 2]) != hash_parts([2, 1])


def test_cache_switch_and_stage_file_names(monkeypatch):
    monkeypatch.delenv("QWH_STAGE_CACHE", raising=False)
    assert not cache_enabled(False) and cache_enabled(True)
    monkeypatch.setenv("QWH_STAGE_CACHE", "1")
    assert cache_enabled(False)
    monkeypatch.setenv("QWH_STAGE_CACHE", "0")
    assert not cache_enabled(False)
    assert stage_file_name("build returns and marts") == "build_returns_and_marts"
    assert stage_file_name("../x") == "x"
