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
"""

from __future__ import annotations

from training.metrics import improvement

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


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    metric: str,
    margin: float,
    drift_on_champion: bool = False,
) -> dict:
    """The decision with its numbers. `challenger`/`champion` are holdout metrics by plain name."""
    if champion is None:
        return {"register": True, "rule": NO_CHAMPION, "metric": metric, "margin": margin,
                "challenger_score": challenger[metric], "champion_score": None, "improvement": None}
    gain = improvement(metric, challenger[metric], champion[metric])
    if gain >= margin:
        rule = BEATS_CHAMPION
    elif drift_on_champion and gain > -margin:
        rule = DRIFT_NOT_WORSE
    else:
        rule = CHAMPION_HOLDS
    return {"register": rule != CHAMPION_HOLDS, "rule": rule, "metric": metric, "margin": margin,
            "challenger_score": challenger[metric], "champion_score": champion[metric], "improvement": gain}


def explain(decision: dict) -> str:
    """One line with the numbers, for the task log and the version description."""
    if decision["rule"] == NO_CHAMPION:
        return f"register ({NO_CHAMPION}): challenger {decision['metric']} {decision['challenger_score']:.4f}"
    verb = "register" if decision["register"] else "hold"
    return (
        f"{verb} ({decision['rule']}): challenger {decision['metric']} {decision['challenger_score']:.4f} vs "
        f"champion {decision['champion_score']:.4f}, improvement {decision['improvement']:+.4f}, "
        f"margin {decision['margin']}"
    )
