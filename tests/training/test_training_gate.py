"""Every branch of the champion/challenger gate, and choosing the challenger."""

from __future__ import annotations

import pytest

from training import gate
from training.metrics import improvement
from training.gate import best_candidate

MARGIN = 0.005


def m(roc_auc: float, log_loss: float = 0.45) -> dict:
    return {"roc_auc": roc_auc, "pr_auc": 0.4, "f1": 0.4, "log_loss": log_loss, "brier": 0.15}


def test_no_champion_registers():
    d = gate.decide(m(0.60), None, "roc_auc", MARGIN)
    assert (d["register"], d["rule"], d["champion_score"]) == (True, gate.NO_CHAMPION, None)


def test_beating_the_champion_by_the_margin_registers():
    d = gate.decide(m(0.735), m(0.730), "roc_auc", MARGIN)
    assert (d["register"], d["rule"]) == (True, gate.BEATS_CHAMPION)
    assert d["improvement"] == pytest.approx(0.005)


def test_a_better_challenger_within_the_margin_holds():
    d = gate.decide(m(0.734), m(0.730), "roc_auc", MARGIN)
    assert (d["register"], d["rule"]) == (False, gate.CHAMPION_HOLDS)
    assert "hold" in gate.explain(d) and "0.7340" in gate.explain(d) and "0.7300" in gate.explain(d)


def test_drift_on_the_champion_registers_a_challenger_that_is_not_worse():
    d = gate.decide(m(0.730), m(0.730), "roc_auc", MARGIN, drift_on_champion=True)
    assert (d["register"], d["rule"]) == (True, gate.DRIFT_NOT_WORSE)


def test_drift_registers_a_challenger_worse_by_less_than_the_margin_but_not_by_the_margin():
    within = gate.decide(m(0.7260), m(0.730), "roc_auc", MARGIN, drift_on_champion=True)
    assert (within["register"], within["rule"]) == (True, gate.DRIFT_NOT_WORSE)
    worse = gate.decide(m(0.7250), m(0.730), "roc_auc", MARGIN, drift_on_champion=True)
    assert (worse["register"], worse["rule"]) == (False, gate.CHAMPION_HOLDS)
    assert not gate.decide(m(0.7260), m(0.730), "roc_auc", MARGIN)["register"]  # without drift: hold


def test_a_clearly_better_challenger_on_a_drift_run_counts_as_beating_the_champion():
    d = gate.decide(m(0.76), m(0.73), "roc_auc", MARGIN, drift_on_champion=True)
    assert d["rule"] == gate.BEATS_CHAMPION


def test_lower_is_better_metrics_are_compared_the_right_way_round():
    assert gate.decide(m(0.7, log_loss=0.40), m(0.7, log_loss=0.45), "log_loss", MARGIN)["register"]
    assert not gate.decide(m(0.7, log_loss=0.45), m(0.7, log_loss=0.40), "log_loss", MARGIN)["register"]
    assert improvement("brier", 0.10, 0.12) == pytest.approx(0.02)
    with pytest.raises(ValueError):
        improvement("no_such_metric", 1, 0)


def test_drift_concerns_the_champion_only_when_the_report_is_about_it():
    assert gate.drift_concerns_champion([{"model_version": "3"}], "3")
    assert gate.drift_concerns_champion([{"model_version": 3}], "3")
    assert gate.drift_concerns_champion([{"model_version": None}], "3")  # a report naming no version
    assert not gate.drift_concerns_champion([{"model_version": "2"}], "3")  # an older model drifted
    assert not gate.drift_concerns_champion([], "3")  # fresh data only


def test_the_challenger_is_chosen_on_validation_not_on_the_test():
    a = {"family": "a", "valid": m(0.70), "test": m(0.80)}
    b = {"family": "b", "valid": m(0.72), "test": m(0.60)}
    assert best_candidate([a, b], "roc_auc")["family"] == "b"
    assert best_candidate([b, a], "roc_auc")["family"] == "b"
    assert best_candidate([a, b], "log_loss")["family"] == "a"  # tie on log loss: the first stays
