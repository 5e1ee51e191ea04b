"""Strategy atoms and the directional sign test (a wrongly inverted atom is caught and named)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from quantwarehouse.sleeves.sign_test import sign_test
from quantwarehouse.sleeves.synthesis import synthesize

DAYS = pd.date_range("2024-03-01", periods=4, freq="D")
RAW = pd.DataFrame(
    {
        "BTCUSDT": [0.02, -0.05, 1.5, np.nan],  # +150 % day: a short loses 100 %, not 150 %
        "ETHUSDT": [-0.01, 0.03, 1.0, 0.0],  # exactly +100 %: the cap leaves it at -100 %
    },
    index=DAYS,
)


def test_short_atoms_earn_minus_the_raw_return_capped_at_a_full_loss():
    atoms = synthesize(RAW, ["BTCUSDT", "ETHUSDT"], "SHORT", "all_short")
    assert list(atoms.returns.columns) == ["BTCUSDT:SHORT:all_short", "ETHUSDT:SHORT:all_short"]
    btc = atoms.returns["BTCUSDT:SHORT:all_short"].tolist()
    assert btc[:3] == [-0.02, 0.05, -1.0] and np.isnan(btc[3])
    assert atoms.returns["ETHUSDT:SHORT:all_short"].tolist() == [0.01, -0.03, -1.0, -0.0]
    assert atoms.atoms.to_dict("records")[0] == {
        "atom": "BTCUSDT:SHORT:all_short",
        "symbol": "BTCUSDT",
        "direction": "SHORT",
        "sleeve": "all_short",
    }


def test_long_atoms_earn_the_raw_return():
    atoms = synthesize(RAW, ["ETHUSDT"], "LONG", "all_long")
    assert atoms.returns["ETHUSDT:LONG:all_long"].tolist() == RAW["ETHUSDT"].tolist()


def test_synthesis_refuses_unknown_directions_and_symbols():
    with pytest.raises(ValueError, match="direction: unknown value 'FLAT'"):
        synthesize(RAW, ["BTCUSDT"], "FLAT", "x")
    with pytest.raises(ValueError, match="selected symbols without returns: XRPUSDT"):
        synthesize(RAW, ["XRPUSDT"], "LONG", "x")


def both_directions():
    short = synthesize(RAW, ["BTCUSDT", "ETHUSDT"], "SHORT", "s")
    long = synthesize(RAW, ["ETHUSDT"], "LONG", "l")
    returns = pd.concat([short.returns, long.returns], axis=1)
    return returns, pd.concat([short.atoms, long.atoms], ignore_index=True)


def test_correct_atoms_pass_and_the_result_is_json():
    returns, atoms = both_directions()
    weights = pd.DataFrame({"hrp": [0.5, 0.3, 0.2]}, index=returns.columns)
    result = sign_test(returns, RAW, atoms, weights)
    assert result["status"] == "PASS" and result["findings"] == []
    assert (result["checked_atoms"], result["short_atoms"], result["long_atoms"]) == (3, 2, 1)
    assert json.loads(json.dumps(result)) == result


def test_a_short_atom_left_uninverted_is_caught_and_named():
    returns, atoms = both_directions()
    returns["ETHUSDT:SHORT:s"] = RAW["ETHUSDT"]  # the bug: raw returns under a SHORT atom
    result = sign_test(returns, RAW, atoms)
    assert result["status"] == "FAIL"
    [finding] = result["findings"]
    assert finding["atom"] == "ETHUSDT:SHORT:s" and finding["severity"] == "error"
    assert finding["message"] == (
        "SHORT atom holds the raw returns: it was not inverted on 3 of 4 days"
    )  # the 0.0 day is the same both ways
    assert finding["first_bad_date"] == "2024-03-01"


def test_a_long_atom_inverted_by_mistake_is_caught():
    returns, atoms = both_directions()
    returns["ETHUSDT:LONG:l"] = -RAW["ETHUSDT"].clip(upper=1.0)
    [finding] = sign_test(returns, RAW, atoms)["findings"]
    assert finding["atom"] == "ETHUSDT:LONG:l"
    assert finding["message"].startswith("LONG atom holds inverted returns")


def test_a_short_atom_without_the_loss_cap_is_caught():
    returns, atoms = both_directions()
    returns["BTCUSDT:SHORT:s"] = -RAW["BTCUSDT"]  # -150 % on the third day
    [finding] = sign_test(returns, RAW, atoms)["findings"]
    assert finding["atom"] == "BTCUSDT:SHORT:s"
    assert finding["message"] == "values differ from the rule on 1 of 4 days"
    assert finding["first_bad_date"] == "2024-03-03"
    assert finding["max_abs_difference"] == pytest.approx(0.5)


def test_a_value_off_by_a_rounding_error_fails_the_exact_rule():
    returns, atoms = both_directions()
    returns.iloc[1, 0] += 1e-15
    assert sign_test(returns, RAW, atoms)["status"] == "FAIL"


def test_negative_weights_and_unknown_atoms_are_findings():
    returns, atoms = both_directions()
    weights = pd.DataFrame(
        {"hrp": [0.6, 0.6, -0.2], "max_sharpe": [1.0, 0.0, np.nan]}, index=returns.columns
    )
    weights.loc["XRPUSDT:LONG:l"] = [0.0, 0.0]
    findings = sign_test(returns, RAW, atoms, weights)["findings"]
    assert [(f["atom"], f["check"], f.get("method")) for f in findings] == [
        ("ETHUSDT:LONG:l", "weights", "hrp"),
        ("ETHUSDT:LONG:l", "weights", "max_sharpe"),
        ("XRPUSDT:LONG:l", "weights", None),
    ]
    assert findings[0]["message"] == "hrp weight -0.2 is not >= 0"


def test_atom_table_and_return_columns_must_agree():
    returns, atoms = both_directions()
    extra = returns.assign(**{"SOLUSDT:LONG:l": 0.0}).drop(columns="ETHUSDT:LONG:l")
    bad_direction = atoms.copy()
    bad_direction.loc[0, "direction"] = "long"
    findings = sign_test(extra, RAW, atoms)["findings"]
    assert {(f["atom"], f["message"]) for f in findings} == {
        ("ETHUSDT:LONG:l", "in the atom table but has no returns"),
        ("SOLUSDT:LONG:l", "has returns but is not in the atom table"),
    }
    [finding] = sign_test(returns, RAW, bad_direction)["findings"]
    assert finding["message"] == "unknown direction 'long'"
    [finding] = sign_test(returns, RAW.drop(columns="BTCUSDT"), atoms)["findings"]
    assert finding == {
        "atom": "BTCUSDT:SHORT:s",
        "check": "raw_returns",
        "severity": "error",
        "message": "no raw returns for BTCUSDT",
    }
