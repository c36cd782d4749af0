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


def _outputs(n: int, separation: float, seed: int):
    """Labels and two models' probabilities: the first separates the classes by `separation` more."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    base = rng.normal(0, 1, n) + y * 0.8
    better = base + y * separation + rng.normal(0, 0.3, n)
    worse = base + rng.normal(0, 0.3, n)
    squash = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    return y, squash(better), squash(worse)


def test_a_small_holdout_says_the_difference_is_within_noise_and_a_big_one_says_who_is_better():
    y, a, b = _outputs(300, 0.05, seed=1)
    small = gate.paired_interval(y, a, b, "roc_auc")
    assert small[0] < 0 < small[1]
    d = gate.decide(m(0.701), m(0.705), "roc_auc", MARGIN, interval=small, holdout="300 flights (2.5 days)")
    assert d["rule"] == gate.CHAMPION_HOLDS and d["within_noise"] is True
    line = gate.explain(d)
    assert "interval of the improvement" in line and "within the holdout's noise" in line
    assert "300 flights (2.5 days)" in line

    y, a, b = _outputs(5_000, 0.8, seed=2)
    lo, hi = gate.paired_interval(y, a, b, "roc_auc")
    assert 0 < lo < hi
    d = gate.decide(m(0.76), m(0.72), "roc_auc", MARGIN, interval=(lo, hi))
    assert d["within_noise"] is False and "within the holdout's noise" not in gate.explain(d)


def test_log_loss_intervals_point_the_right_way():
    y, a, b = _outputs(5_000, 0.8, seed=3)
    lo, hi = gate.paired_interval(y, a, b, "log_loss")
    assert 0 < lo < hi  # the better model's lower log loss is a positive improvement
