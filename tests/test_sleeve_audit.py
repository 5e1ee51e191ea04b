"""audit.jsonl: a hash chain on a real file; the verifier catches edits, removals, reorders."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from quantwarehouse.sleeves.audit import (
    AuditError,
    AuditTrail,
    environment_info,
    frame_hash,
    verify_audit,
)


@pytest.fixture
def trail_path(tmp_path):
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path)
    trail.genesis("run_1", "binance_spot_rating_all_long", environment_info(), {"lookback": 180})
    trail.intent("selection", {"target": 15, "as_of": pd.Timestamp("2024-05-01")})
    trail.outcome("selection", "success", "a" * 64, "b" * 64, {"selected": np.int64(15)})
    trail.intent("optimize", {"methods": ("hrp",)})
    trail.outcome("optimize", "success", "c" * 64, "d" * 64, {"sum": np.float64(1.0), "x": np.nan})
    trail.close("success")
    return path


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_a_finished_trail_verifies(trail_path):
    assert verify_audit(trail_path) == (True, [])
    records = [json.loads(line) for line in lines(trail_path)]
    assert [r["kind"] for r in records] == [
        "genesis", "intent", "outcome", "intent", "outcome", "close"
    ]  # fmt: skip
    assert records[0]["prev_hash"] == "0" * 64 and records[0]["run_id"] == "run_1"
    assert records[1]["params"]["as_of"] == "2024-05-01"
    assert records[4]["metrics"] == {"sum": 1.0, "x": None}
    assert records[-1]["records"] == 5


def test_each_hash_is_sha256_of_the_sorted_record_without_it(trail_path):
    previous = "0" * 64
    for line in lines(trail_path):
        record = json.loads(line)
        body = {k: v for k, v in record.items() if k != "hash"}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        assert record["hash"] == hashlib.sha256(text.encode()).hexdigest()
        assert record["prev_hash"] == previous
        previous = record["hash"]


def test_an_edited_line_is_detected(trail_path):
    text = trail_path.read_text().replace('"selected":15', '"selected":16')
    trail_path.write_text(text)
    ok, problems = verify_audit(trail_path)
    assert not ok
    assert problems == ["line 3: hash mismatch: the record was edited"]


def test_a_removed_line_is_detected(trail_path):
    kept = lines(trail_path)
    del kept[2]
    trail_path.write_text("\n".join(kept) + "\n")
    ok, problems = verify_audit(trail_path)
    assert not ok
    assert problems[0].startswith("line 3: prev_hash does not match the previous line's hash")
    assert "line 3: seq 3, expected 2" in problems


def test_reordered_lines_are_detected(trail_path):
    kept = lines(trail_path)
    kept[1], kept[2] = kept[2], kept[1]
    trail_path.write_text("\n".join(kept) + "\n")
    ok, problems = verify_audit(trail_path)
    assert not ok
    assert any(p.startswith("line 2: prev_hash does not match") for p in problems)
    assert "line 2: outcome of step 'selection' without its intent" in problems


def test_lines_removed_from_the_end_are_detected(trail_path):
    trail_path.write_text("\n".join(lines(trail_path)[:-2]) + "\n")
    ok, problems = verify_audit(trail_path)
    assert not ok and "has no close record" in problems[-1]


def test_a_rewritten_chain_is_caught_against_a_head_kept_elsewhere(trail_path):
    head = json.loads(lines(trail_path)[-1])["hash"]
    assert verify_audit(trail_path, expected_head=head) == (True, [])
    assert not verify_audit(trail_path, expected_head="f" * 64)[0]


def test_garbage_lines_are_reported(trail_path):
    trail_path.write_text(trail_path.read_text() + "not json\n")
    ok, problems = verify_audit(trail_path)
    assert not ok and any(p.startswith("line 7: not valid JSON") for p in problems)


def test_appending_resumes_the_chain_and_refuses_damaged_or_closed_trails(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditTrail(path).genesis("r", "p", {}, {})
    resumed = AuditTrail(path)
    resumed.intent("step", {})
    resumed.outcome("step", "success", None, None, {})
    resumed.close("success")
    assert verify_audit(path) == (True, [])
    with pytest.raises(AuditError, match="the trail is closed"):
        AuditTrail(path).intent("more", {})
    path.write_text(path.read_text().replace('"status":"success"', '"status":"failed"', 1))
    with pytest.raises(AuditError, match="cannot append to a damaged trail: line 3: hash mismatch"):
        AuditTrail(path)


def test_records_must_come_in_order(tmp_path):
    trail = AuditTrail(tmp_path / "audit.jsonl")
    with pytest.raises(AuditError, match="genesis record must be the first"):
        trail.intent("selection", {})
    trail.genesis("r", "p", {}, {})
    with pytest.raises(AuditError, match="genesis record must be the first and only one"):
        trail.genesis("r", "p", {}, {})
    with pytest.raises(AuditError, match="outcome of step 'optimize' without its intent"):
        trail.outcome("optimize", "success", None, None, {})


def test_frame_hash_changes_with_any_value_or_label():
    frame = pd.DataFrame({"a": [0.1, 0.2]}, index=pd.date_range("2024-01-01", periods=2))
    same = frame.copy()
    assert frame_hash(frame) == frame_hash(same)
    assert frame_hash(frame) != frame_hash(frame.assign(a=[0.1, 0.2000001]))
    assert frame_hash(frame) != frame_hash(frame.rename(columns={"a": "b"}))
    assert frame_hash(frame) != frame_hash(frame.shift(freq="D"))


def test_missing_trail_is_not_ok(tmp_path):
    assert verify_audit(tmp_path / "nope.jsonl") == (
        False,
        [f"{tmp_path / 'nope.jsonl'}: no audit trail"],
    )
