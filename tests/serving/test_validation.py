"""Validation before traffic: a good version passes with its numbers; every kind of bad one is rejected."""

from __future__ import annotations

import pandas as pd
import pytest
from serving_helpers import unique_name

import model_registry
from serving.validation import ValidationFailed, holdout, validate


@pytest.fixture(scope="module")
def versions(register) -> dict:
    name = unique_name("validation")
    return {
        "name": name, "good": register(name, "good"), "pyfunc": register(name, "raising_pyfunc"),
        "wrong": register(name, "wrong_features"), "liar": register(name, "good", metric_offset=0.15),
    }


def test_a_good_version_passes_on_the_feature_stores_holdout(serving_env, versions, split):
    cfg = serving_env(versions["name"])
    numbers = validate(versions["name"], versions["good"], cfg)

    assert numbers["holdout_rows"] == len(split.test)  # the flights of the test range, rebuilt from Feast
    assert (numbers["test_start"], numbers["test_end"]) == split.test_range
    assert set(numbers["comparison"]) == {"roc_auc", "pr_auc", "brier"}
    assert all(row["gap"] < 1e-9 for row in numbers["comparison"].values())
    assert 0.6 < numbers["metrics"]["roc_auc"] < 1.0
    assert 0 < numbers["latency"]["p50_ms"] <= numbers["latency"]["p99_ms"] <= cfg.serving_p99_budget_ms


def test_a_model_without_the_sklearn_flavour_is_rejected(serving_env, versions):
    cfg = serving_env(versions["name"])
    with pytest.raises(ValidationFailed, match="does not load"):
        validate(versions["name"], versions["pyfunc"], cfg)


def test_a_model_with_the_wrong_feature_count_is_rejected(serving_env, versions):
    cfg = serving_env(versions["name"])
    with pytest.raises(ValidationFailed, match="cannot predict.*3 features"):
        validate(versions["name"], versions["wrong"], cfg)


def test_metrics_that_disagree_with_the_logged_ones_are_rejected(serving_env, versions):
    cfg = serving_env(versions["name"])
    with pytest.raises(ValidationFailed, match=r"roc_auc .* logged \(gap 0\.1500 > tolerance 0\.02\)") as failure:
        validate(versions["name"], versions["liar"], cfg)
    assert failure.value.numbers["comparison"]["pr_auc"]["gap"] < 1e-9  # only the lie is reported


def test_a_version_over_the_latency_budget_is_rejected(serving_env, versions):
    cfg = serving_env(versions["name"], MLOPS_SERVING_P99_BUDGET_MS="0.001")
    with pytest.raises(ValidationFailed, match="p99 latency .* > budget 0.001 ms"):
        validate(versions["name"], versions["good"], cfg)


def test_a_version_without_the_contract_tags_is_rejected(serving_env, versions, register, mlflow_server):
    cfg = serving_env(versions["name"])
    version = register(versions["name"], "good")
    model_registry.client(mlflow_server).delete_model_version_tag(versions["name"], version, "test_end")
    with pytest.raises(ValidationFailed, match=r"lacks the version tags \['test_end'\]"):
        validate(versions["name"], version, cfg)


def test_the_holdout_counts_only_outcomes_known_at_data_as_of(split):
    from features.store import FLIGHTS_TABLE, read_offline_table

    start, end = split.test_range
    as_of = pd.Timestamp(end) - pd.Timedelta(days=3)
    flights = read_offline_table(FLIGHTS_TABLE)
    in_range = flights[(flights["event_timestamp"] >= pd.Timestamp(start))
                       & (flights["event_timestamp"] <= pd.Timestamp(end))]

    everything, _ = holdout(start, end)
    known, labels = holdout(start, end, as_of.isoformat())

    assert len(everything) == in_range["flight_id"].nunique()
    assert len(known) == len(labels) == (in_range["outcome_at"] <= as_of).sum() < len(everything)
