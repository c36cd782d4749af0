"""The champion/challenger gate: does the new model deserve the `challenger` alias?

The challenger is the best candidate on validation data (`best_candidate`); the champion is the
version with the `production` alias. Both are scored on the same newest holdout
(this run's test part). Rules, in order:
1. no champion: register;
2. the challenger beats the champion by at least `margin` on the gate metric: register;
3. the run was started by a drift report about the champion (its `model_version`
   is the champion, or the report names none), so the champion's training data
   no longer holds, and the challenger is at least as good on recent data, read
   as "not worse by `margin` or more": the margin is the gate's noise level, and
   the champion's score is the less trustworthy one now: register;
4. otherwise the champion holds: nothing is registered and no event is emitted.

The decision also carries a paired bootstrap interval of the improvement
(`paired_interval`: the holdout's flights resampled, both models scored on each
resample), so a reader can tell "the challenger is worse" from "the holdout is too
small to tell": on the demo's 7.5 July days the holdout is about 2.5 days of flights,
and measured side by side (bench/retrain_bench.py) no retraining variant beat the
winter model there, while the same retraining won by +0.04 ROC AUC with three weeks
of July labels.
"""

from __future__ import annotations

from training.metrics import improvement

INTERVAL_LEVEL = 0.9
INTERVAL_RESAMPLES = 200

NO_CHAMPION = "no_champion"
BEATS_CHAMPION = "beats_champion_by_margin"
DRIFT_NOT_WORSE = "drift_and_not_worse"
CHAMPION_HOLDS = "champion_holds"


def best_candidate(candidate_summaries: list[dict], metric: str) -> dict:
    """The challenger: the best candidate on validation (the test part stays unseen until the gate)."""
    best = candidate_summaries[0]
    for other in candidate_summaries[1:]:
        if improvement(metric, other["valid"][metric], best["valid"][metric]) > 0:
            best = other
    return best


def drift_concerns_champion(drift_report_events: list[dict], champion_version: str | None) -> bool:
    """Whether any triggering drift report is about the current champion."""
    return any(
        e.get("model_version") in (None, "") or str(e["model_version"]) == str(champion_version)
        for e in drift_report_events
    )


def paired_interval(labels, challenger_p, champion_p, metric: str, resamples: int = INTERVAL_RESAMPLES,
                    level: float = INTERVAL_LEVEL, seed: int = 0) -> tuple[float, float] | None:
    """The `level` interval of the challenger's improvement on the holdout, flights resampled with replacement.

    Flights of one day share its weather, so resampling them one by one understates the
    spread: read the interval as the least uncertainty there is.
    """
    import numpy as np

    from training.metrics import scores

    y = np.asarray(labels)
    a, b = np.asarray(challenger_p, dtype=float), np.asarray(champion_p, dtype=float)
    if len(y) < 2 or len(set(y.tolist())) < 2:
        return None
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        if len(set(y[i].tolist())) < 2:
            continue
        # 0.5 only matters to the decision metrics (f1); the gate metric, ROC AUC, needs no threshold.
        gains.append(improvement(metric, scores(y[i], a[i], 0.5)[metric], scores(y[i], b[i], 0.5)[metric]))
    if not gains:
        return None
    lo, hi = np.quantile(gains, [(1 - level) / 2, 1 - (1 - level) / 2])
    return round(float(lo), 4), round(float(hi), 4)


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    metric: str,
    margin: float,
    drift_on_champion: bool = False,
    interval: tuple[float, float] | None = None,
    holdout: str | None = None,
) -> dict:
    """The decision with its numbers. `challenger`/`champion` are holdout metrics by plain name;
    `interval` (`paired_interval`) and `holdout` (what it holds, in words) are reported with them."""
    if champion is None:
        return {"register": True, "rule": NO_CHAMPION, "metric": metric, "margin": margin,
                "challenger_score": challenger[metric], "champion_score": None, "improvement": None,
                "interval": None, "holdout": holdout, "within_noise": None}
    gain = improvement(metric, challenger[metric], champion[metric])
    if gain >= margin:
        rule = BEATS_CHAMPION
    elif drift_on_champion and gain > -margin:
        rule = DRIFT_NOT_WORSE
    else:
        rule = CHAMPION_HOLDS
    within_noise = None if interval is None else interval[0] < 0 < interval[1]
    return {"register": rule != CHAMPION_HOLDS, "rule": rule, "metric": metric, "margin": margin,
            "challenger_score": challenger[metric], "champion_score": champion[metric], "improvement": gain,
            "interval": list(interval) if interval else None, "holdout": holdout, "within_noise": within_noise}


def explain(decision: dict) -> str:
    """One line with the numbers, for the task log and the version description."""
    if decision["rule"] == NO_CHAMPION:
        return f"register ({NO_CHAMPION}): challenger {decision['metric']} {decision['challenger_score']:.4f}"
    verb = "register" if decision["register"] else "hold"
    line = (
        f"{verb} ({decision['rule']}): challenger {decision['metric']} {decision['challenger_score']:.4f} vs "
        f"champion {decision['champion_score']:.4f}, improvement {decision['improvement']:+.4f}, "
        f"margin {decision['margin']}"
    )
    interval = decision.get("interval")
    if interval:
        line += (f"; {INTERVAL_LEVEL:.0%} interval of the improvement [{interval[0]:+.4f}, {interval[1]:+.4f}]"
                 + (f" on {decision['holdout']}" if decision.get("holdout") else ""))
        if decision.get("within_noise"):
            line += (": within the holdout's noise, neither model is shown better; more labelled flights of the "
                     "new period narrow it")
    return line
