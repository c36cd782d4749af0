"""The live judge (`serving.rollout`) on plain frames of served rows, from real models on real flights."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from features.compute import LABEL, MODEL_FEATURES
from serving import rollout
from serving.inference_log import MAIN, MODEL_MS, PREDICTION, PROBABILITY, SHADOW
from serving.service import in_canary

THRESHOLD = 0.3


@pytest.fixture
def cfg(serving_env):
    return serving_env("judge")


def served(estimator, test: pd.DataFrame, version: str, model_ms: float = 1.5, labels: bool = True) -> pd.DataFrame:
    """What the log holds for `test`'s flights answered by `estimator` (request ids are the row numbers)."""
    p = estimator.predict_proba(test[MODEL_FEATURES])[:, 1]
    rng = np.random.default_rng(0)
    out = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(len(test))], "flight_id": [f"F{i}-EWR" for i in range(len(test))],
        "model_version": version, PROBABILITY: p, PREDICTION: (p >= THRESHOLD).astype("int64"),
        MODEL_MS: model_ms * rng.uniform(0.8, 1.2, len(test)), "latency_ms": 2 + model_ms * rng.uniform(0.8, 1.2, len(test)),
    })
    if labels:
        out[LABEL] = test[LABEL].to_numpy().astype("float64")
    return out


@pytest.fixture(scope="module")
def retrained(estimators):
    """Another good model, as a retraining gives: same recipe, another early-stopping split."""
    return estimators["retrained"]


def shadow_counts(rows: int, errors: int = 0, dropped: int = 0) -> dict:
    return {"shadow_scored": rows, "shadow_errors": errors, "shadow_dropped": dropped}


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.beta(2, 5, 5000), rng.beta(2, 5, 5000)
    assert rollout.psi(a, b) < 0.02
    assert rollout.psi(a, a * 0.3) > 0.5


def test_a_retrained_good_model_passes_the_shadow(split, estimators, retrained, cfg):
    production = served(estimators["good"], split.test, "1")
    shadow = served(retrained, split.test, "2")
    verdict = rollout.judge_shadow("2", shadow, production, shadow_counts(len(shadow)), cfg)
    assert verdict.passed, verdict.as_dict()
    assert verdict.numbers["rows"] == len(split.test) and isinstance(verdict.numbers["quality"], dict)


def test_the_model_trained_on_a_skewed_sample_fails_the_shadow_with_its_reasons(split, estimators, cfg):
    production = served(estimators["good"], split.test, "1")
    shadow = served(estimators["skewed"], split.test, "3")
    verdict = rollout.judge_shadow("3", shadow, production, shadow_counts(len(shadow)), cfg)
    assert not verdict.passed
    text = verdict.summary()
    assert "f1 on labelled live rows" in text and "interval of the difference" in text, text
    assert verdict.numbers["mean_score_shift"] < -0.05
    # before its labels arrive, its differences from production fail it
    unlabelled = rollout.judge_shadow("3", shadow.drop(columns=[LABEL]), production.drop(columns=[LABEL]),
                                      shadow_counts(len(shadow)), cfg)
    assert not unlabelled.passed
    assert "decisions agree" in unlabelled.summary() and "score PSI" in unlabelled.summary()
    # and yet its ranking is fine: offline validation (ROC AUC against what was logged) would not catch it
    quality = verdict.numbers["quality"]["roc_auc"]
    assert quality["improvement"] > -0.05, quality


def test_no_shadowed_request_fails_for_want_of_evidence(cfg):
    empty = pd.DataFrame(columns=["request_id", PROBABILITY, PREDICTION, MODEL_MS])
    verdict = rollout.judge_shadow("2", empty, empty, shadow_counts(0), cfg)
    assert not verdict.passed and "no live request was shadowed" in verdict.summary()


def test_errors_and_a_slow_shadow_fail_and_few_labels_are_not_judged(split, estimators, cfg):
    test = split.test.iloc[:50]
    production = served(estimators["good"], test, "1", model_ms=1.5, labels=False)
    slow = served(estimators["good"], test, "2", model_ms=6.0, labels=False)
    verdict = rollout.judge_shadow("2", slow, production, shadow_counts(50, errors=5), cfg)
    text = verdict.summary()
    assert not verdict.passed and "error rate 0.0909" in text and "median request latency with its model time" in text, text
    assert "quality" not in verdict.numbers  # no labels at all

    labelled = served(estimators["good"], test, "1")
    verdict = rollout.judge_shadow("2", served(estimators["good"], test, "2"), labelled, shadow_counts(50), cfg)
    assert verdict.passed and verdict.numbers["quality"].startswith("not judged: 50 labelled rows < 500")


def test_a_different_model_fails_without_labels_and_passes_when_labels_show_it_is_not_worse(split, estimators,
                                                                                           cfg):
    """"other" scores on another scale (PSI above 2 against "good") while ranking about as well."""
    production = served(estimators["good"], split.test, "1")
    shadow = served(estimators["other"], split.test, "2")
    blind = rollout.judge_shadow("2", shadow.drop(columns=[LABEL]), production.drop(columns=[LABEL]),
                                 shadow_counts(len(shadow)), cfg)
    assert not blind.passed and "score PSI" in blind.summary()
    labelled = rollout.judge_shadow("2", shadow, production, shadow_counts(len(shadow)), cfg)
    assert labelled.passed, labelled.as_dict()
    assert any("score PSI" in note for note in labelled.numbers["notes"])


def test_a_drop_within_the_noise_of_few_labels_is_a_note_not_a_reason(split, estimators, cfg):
    """The demo's case: 174 labelled rows, F1 0.07 lower on decisions that differ both ways. A drop that
    many rows cannot tell from chance does not roll a version back; it is kept with its interval."""
    import dataclasses

    production = served(estimators["good"], split.test.iloc[:200], "1")
    production[PREDICTION] = (production[PROBABILITY] >= production[PROBABILITY].quantile(0.6)).astype("int64")
    y, d = production[LABEL].to_numpy(), production[PREDICTION].to_numpy()
    caught, missed = np.flatnonzero((y == 1) & (d == 1)), np.flatnonzero((y == 1) & (d == 0))
    flipped = np.r_[caught[:12], missed[:8]]  # 12 late flights it no longer catches, 8 it now catches
    shadow = production.assign(model_version="2")
    shadow.loc[flipped, PREDICTION] = 1 - shadow.loc[flipped, PREDICTION]
    few = dataclasses.replace(cfg, rollout_min_labelled=150)

    verdict = rollout.judge_shadow("2", shadow, production, shadow_counts(200), few)
    f1 = verdict.numbers["quality"]["f1"]
    assert f1["improvement"] < -few.quality_drop_margin and f1["interval"][0] < 0 < f1["interval"][1], f1
    assert verdict.passed, verdict.as_dict()
    [note] = verdict.numbers["quality_notes"]
    assert note.startswith("f1 on labelled live rows") and "within the noise of 200 labelled rows" in note

    # the same kind of change on ten times the rows is no longer chance
    many = pd.concat([production] * 10, ignore_index=True).assign(request_id=lambda f: [f"r{i}" for i in range(len(f))])
    shadow_many = pd.concat([shadow] * 10, ignore_index=True).assign(request_id=many["request_id"])
    verdict = rollout.judge_shadow("2", shadow_many, many, shadow_counts(2000), few)
    assert not verdict.passed and "f1 on labelled live rows" in verdict.summary(), verdict.as_dict()


def test_rows_dropped_by_the_server_are_reported_not_failed(split, estimators, cfg):
    production = served(estimators["good"], split.test.iloc[:500], "1")
    shadow = production.iloc[:300].assign(model_version="2")
    verdict = rollout.judge_shadow("2", shadow, production, shadow_counts(300, dropped=200), cfg)
    assert verdict.passed and verdict.numbers["dropped"] == 200 and verdict.numbers["rows"] == 300


def canary_split(production_model, candidate_model, test: pd.DataFrame, share: float = 0.3):
    main, cand = served(production_model, test, "1"), served(candidate_model, test, "2")
    picked = np.array([in_canary(f, share) for f in main["flight_id"]])
    return cand[picked].reset_index(drop=True), main[~picked].reset_index(drop=True)


def test_the_canary_passes_a_good_model_and_fails_the_skewed_one(split, estimators, retrained, cfg):
    canary, production = canary_split(estimators["good"], retrained, split.test)
    good = rollout.judge_canary("2", canary, production, {"canary_errors": 0}, cfg)
    assert good.passed, good.as_dict()

    canary, production = canary_split(estimators["good"], estimators["skewed"], split.test)
    bad = rollout.judge_canary("3", canary, production, {"canary_errors": 0}, cfg)
    assert not bad.passed and "f1 on labelled live rows" in bad.summary()
    assert any("score PSI" in note for note in bad.numbers["notes"])

    erring = rollout.judge_canary("2", canary, production, {"canary_errors": len(canary)}, cfg)
    assert "error rate 0.5000" in erring.summary()
    nothing = rollout.judge_canary("2", canary.iloc[0:0], production, {}, cfg)
    assert not nothing.passed and "no live traffic" in nothing.summary()


def test_rows_are_read_back_from_the_log_by_role_and_time(cfg):
    from serving.inference_log import InferenceLog

    now = datetime.now(timezone.utc)

    def row(i: int, version: str, role: str, when: datetime) -> dict:
        return {"request_id": f"r{i}", "request_time": when, "as_of": when, "model_name": "judge",
                "model_version": version, "carrier": "UA", "flight": 1, "tailnum": "N1", "origin": "EWR",
                "dest": "IAH", "route": "EWR-IAH", "sched_dep_ts": when, "flight_id": f"UA1-{i}",
                PROBABILITY: 0.2, PREDICTION: 0, "latency_ms": 2.0, "role": role, MODEL_MS: 1.0,
                **{f: 1.0 for f in MODEL_FEATURES}}

    log = InferenceLog(flush_rows=10_000, flush_seconds=3600)
    log.append([row(i, "1", MAIN, now) for i in range(5)] + [row(i, "2", SHADOW, now) for i in range(5)]
               + [row(9, "2", SHADOW, now - timedelta(hours=2))])
    log.flush()
    assert len(rollout.read_rows("2", SHADOW, since=now - timedelta(minutes=1))) == 5
    assert len(rollout.read_rows("2", SHADOW)) == 6
    assert rollout.read_rows("2").empty and len(rollout.read_rows("1")) == 5
    assert rollout.count_rows("2", SHADOW, since_epoch=now.timestamp() - 60) == 6  # by file time
    assert rollout.count_rows("2", SHADOW, since_epoch=now.timestamp() + 3600) == 0


def hourly(hours: int, per_hour: int = 20, seed: int = 3) -> pd.DataFrame:
    """Production's labelled rows of `hours` hours of one day, `per_hour` flights asked about in each
    (`as_of` within the hour), about a third late, decisions at THRESHOLD that catch most of them."""
    rng = np.random.default_rng(seed)
    n = hours * per_hour
    y = (rng.uniform(size=n) < 0.3).astype("float64")
    p = np.clip(0.2 + 0.3 * y + rng.normal(0, 0.1, n), 0.01, 0.99)
    start = pd.Timestamp("2013-07-08T06:00:00Z")
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)],
        "as_of": start + pd.to_timedelta(np.repeat(np.arange(hours), per_hour) * 60 + rng.integers(0, 60, n),
                                         unit="min"),
        "model_version": "1", PROBABILITY: p, PREDICTION: (p >= THRESHOLD).astype("int64"), LABEL: y,
        MODEL_MS: 1.5, "latency_ms": 3.0,
    })


def test_a_drop_in_a_few_hours_is_weighed_by_hours_not_rows(cfg):
    """The demo's case: a half-day of July in which one afternoon's weather made the retrained model look
    far worse (F1 0.195 vs 0.415, row interval [-0.30, -0.12]) while on every flight of those days it was
    as good. Flights of one hour share its weather: 240 rows in 12 hours are 12 pieces of evidence."""
    import dataclasses

    production = hourly(12)
    shadow = production.assign(model_version="2")
    storm = production["as_of"].dt.floor("h").isin(production["as_of"].dt.floor("h").unique()[[4, 5]])
    # in two hours every decision of the candidate is wrong; in the other ten both decide alike
    shadow.loc[storm, PREDICTION] = 1 - shadow.loc[storm, LABEL].astype("int64")
    shadow.loc[storm, PROBABILITY] = 1 - shadow.loc[storm, PROBABILITY]
    few = dataclasses.replace(cfg, rollout_min_labelled=200)

    rows = rollout.improvement_intervals(shadow.drop(columns=["as_of"]), production.drop(columns=["as_of"]),
                                         LABEL, paired=True)
    hours = rollout.improvement_intervals(shadow, production, LABEL, paired=True)
    assert rows["f1"][1] < 0, rows  # rows drawn one by one: the two hours look like a sure drop
    assert hours["f1"][0] < 0 <= hours["f1"][1], hours  # drawn by the hour: a draw may miss both

    blind_to_hours = rollout.judge_shadow("2", shadow.drop(columns=["as_of"]), production.drop(columns=["as_of"]),
                                          shadow_counts(len(shadow)), few)
    assert not blind_to_hours.passed and "f1 on labelled live rows" in blind_to_hours.summary()
    verdict = rollout.judge_shadow("2", shadow, production, shadow_counts(len(shadow)), few)
    f1 = verdict.numbers["quality"]["f1"]
    assert f1["improvement"] < -few.quality_drop_margin and f1["interval"][1] >= 0, f1
    assert verdict.passed, verdict.as_dict()
    note = next(n for n in verdict.numbers["quality_notes"] if n.startswith("f1 on labelled live rows"))
    assert "within the noise of 240 labelled rows in 12 hours" in note, note


def test_a_drop_in_every_hour_still_fails_the_shadow(cfg):
    """The candidate consistently worse, hour after hour: however the hours are drawn, it is worse."""
    import dataclasses

    production = hourly(24)
    shadow = production.assign(model_version="2")
    for _, hour in production.groupby(production["as_of"].dt.floor("h")):
        caught = hour.index[(hour[LABEL] == 1) & (hour[PREDICTION] == 1)][:2]  # two late flights it misses
        calm = hour.index[(hour[LABEL] == 0) & (hour[PREDICTION] == 0)][:2]  # two false alarms
        shadow.loc[caught, [PREDICTION, PROBABILITY]] = [0, 0.1]
        shadow.loc[calm, [PREDICTION, PROBABILITY]] = [1, 0.6]
    few = dataclasses.replace(cfg, rollout_min_labelled=200)

    verdict = rollout.judge_shadow("2", shadow, production, shadow_counts(len(shadow)), few)
    f1 = verdict.numbers["quality"]["f1"]
    assert f1["improvement"] < -few.quality_drop_margin and f1["interval"][1] < 0, f1
    assert not verdict.passed and "f1 on labelled live rows" in verdict.summary(), verdict.as_dict()

    # the canary's two samples (different flights of the same hours) are drawn by the hour on each side
    canary = rollout.improvement_intervals(shadow.iloc[::2], production.iloc[1::2], LABEL, paired=False)
    assert canary["f1"][1] < 0, canary
