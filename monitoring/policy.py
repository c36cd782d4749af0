"""The drift policy: should this window of served traffic start a retraining?

Plain data in, a decision out: no I/O, no clock, so every branch is unit-tested.

Retrain when the window's report found data drift (its critical test on the share of
drifted columns failed: `monitoring.report`, so the HTML says what the policy acts
on), or when the quality measured on served flights whose labels arrived fell: the primary
metric, log loss or Brier score worse by more than `quality_drop_margin` than training
reported on its test split, or the calibration gap (mean predicted late rate minus the
observed one) beyond `calibration_gap_limit` either way. ROC AUC alone misses a model
whose ranking holds while its probabilities drift off (v1 on July: ROC AUC -0.027, log
loss 0.561 -> 0.692, predicted 0.358 against 0.458 observed). Features
missing from the window are a data-quality incident: named in the decision, never a
reason to retrain (retraining cannot bring a lost feed back). Do not retrain when
- the window is too small to judge (`min_rows`);
- a retraining was already triggered for this deployed version in this drift
  episode (an episode is a run of drifted windows; a clean window ends it), unless
  the retry rule below allows another;
- the model-wide cool-down after the last drift-triggered retraining is not over.
The last two are the loop guard: retraining, redeploying and monitoring the same
traffic cannot trigger retraining after retraining.

No silent stop. Monitoring follows the deployed version, so a drifted window of the
same version `retry_after` after an attempt means the attempt did not replace it
(the gate held, validation failed, the deployment rolled back). Then the policy tries
again, up to `max_attempts` per episode; after the last one it says
`attempts_exhausted`, and the monitoring task alerts a person once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from training.metrics import HIGHER_IS_BETTER, METRICS, PRIMARY, improvement

# Quality figures from fewer labelled rows are too noisy to act on.
MIN_LABELLED_ROWS = 200

# Reasons, in the order the policy checks them.
TOO_FEW_ROWS = "too_few_rows"
NO_DRIFT = "no_drift"
ALREADY_TRIGGERED = "already_triggered"
ATTEMPTS_EXHAUSTED = "attempts_exhausted"
COOLDOWN = "cooldown"
RETRAIN = "retrain"


@dataclass(frozen=True)
class Thresholds:
    min_rows: int
    drift_share: float
    quality_drop_margin: float
    cooldown: timedelta
    min_labelled_rows: int = MIN_LABELLED_ROWS
    calibration_gap_limit: float = 0.05
    max_attempts: int = 3  # drift-triggered retrainings per deployed version and episode
    retry_after: timedelta = timedelta(minutes=30)  # since the episode's last attempt

    @classmethod
    def from_settings(cls, cfg) -> "Thresholds":
        return cls(
            min_rows=cfg.monitor_min_rows,
            drift_share=cfg.drift_share_threshold,
            quality_drop_margin=cfg.quality_drop_margin,
            cooldown=timedelta(minutes=cfg.retrain_cooldown_minutes),
            calibration_gap_limit=cfg.calibration_gap_limit,
            max_attempts=cfg.retrain_max_attempts,
            retry_after=timedelta(minutes=cfg.retrain_retry_minutes),
        )


@dataclass(frozen=True)
class Observation:
    """What one report measured."""

    rows: int
    drift_share: float  # for the log; the verdict is `drift_detected`
    drift_detected: bool = False  # the report's critical drift test failed
    missing_columns: tuple[str, ...] = ()  # the report's missing-value tests failed
    quality_metric: str = PRIMARY
    quality: float | None = None  # on the window's served flights whose labels are known
    reference_quality: float | None = None  # the version's training-reported test metric
    labelled_rows: int = 0
    figures: dict | None = None  # every quality figure of the window (monitoring.report.quality_figures)
    reference_figures: dict | None = None  # the version's test figures, by metric name
    calibration_gap_limit: float | None = None  # calibrated on the version's training weeks (monitoring.calibration)


@dataclass(frozen=True)
class History:
    """What the state remembers when the window is judged."""

    attempts_in_episode: int = 0  # drift-triggered retrainings for this deployed version, this episode
    last_attempt_at: datetime | None = None  # the latest of them
    last_retrain_at: datetime | None = None  # any version of the model


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    drifted: bool | None  # None: the window was too small to say
    data_drift: bool = False
    quality_dropped: bool = False
    quality_drop: float | None = None
    cooldown_left_seconds: float = 0.0
    quality_reasons: tuple[str, ...] = ()  # which quality figures fell, with their numbers
    data_quality_incident: tuple[str, ...] = ()  # features missing from the window


    def as_dict(self) -> dict:
        """JSON-shaped: what XCom and the state file hold."""
        return {**asdict(self), "data_quality_incident": list(self.data_quality_incident),
                "quality_reasons": list(self.quality_reasons)}


def quality_drop(obs: Observation, min_labelled_rows: int = MIN_LABELLED_ROWS) -> float | None:
    """How far served quality fell below the training figure (positive = worse), or None if unknown."""
    if obs.quality is None or obs.reference_quality is None or obs.labelled_rows < min_labelled_rows:
        return None
    return -improvement(obs.quality_metric, obs.quality, obs.reference_quality)


# Judged beside the primary metric when both sides have them: the metrics of the probabilities
# themselves (lower is better), which move when the ranking holds but the calibration drifts.
SECONDARY = tuple(m for m in METRICS if not HIGHER_IS_BETTER[m])


def quality_reasons(obs: Observation, limits: Thresholds) -> tuple[str, ...]:
    """Each quality figure of the window that fell beyond its limit, as a readable reason."""
    if obs.labelled_rows < limits.min_labelled_rows:
        return ()
    out = []
    drop = quality_drop(obs, limits.min_labelled_rows)
    if drop is not None and drop > limits.quality_drop_margin:
        out.append(f"{obs.quality_metric} {obs.quality:.4f} vs {obs.reference_quality:.4f} in training "
                   f"(worse by {drop:.4f} > {limits.quality_drop_margin})")
    figures, reference = obs.figures or {}, obs.reference_figures or {}
    for metric in SECONDARY:
        if metric == obs.quality_metric or figures.get(metric) is None or reference.get(metric) is None:
            continue
        worse = -improvement(metric, figures[metric], reference[metric])
        if worse > limits.quality_drop_margin:
            out.append(f"{metric} {figures[metric]:.4f} vs {reference[metric]:.4f} in training "
                       f"(worse by {worse:.4f} > {limits.quality_drop_margin})")
    gap = figures.get("calibration_gap")
    # The late rate moves from week to week (a storm, a holiday): a gap no bigger than the version's own
    # training weeks showed is the weather of the week, not a model that stopped fitting.
    gap_limit = max(limits.calibration_gap_limit, obs.calibration_gap_limit or 0.0)
    if gap is not None and abs(gap) > gap_limit:
        out.append(f"calibration gap {gap:+.4f} (predicted {figures['mean_probability']:.4f}, observed "
                   f"{figures['late_rate']:.4f}) beyond +-{gap_limit:.4f}")
    return tuple(out)


def decide(obs: Observation, history: History, limits: Thresholds, now: datetime,
           earlier: "tuple[str, Observation] | None" = None) -> Decision:
    """The decision for one window; `now` is passed in so tests control the clock.

    `earlier` is (id, quality) of the version's previous window judged again now that more of
    its flights' labels have arrived: a quality that fell there counts here, with its own reason.
    """
    if obs.rows < limits.min_rows:
        return Decision(False, TOO_FEW_ROWS, drifted=None)
    drop = quality_drop(obs, limits.min_labelled_rows)
    data_drift = obs.drift_detected
    reasons = quality_reasons(obs, limits)
    if earlier is not None:
        window, late = earlier
        reasons += tuple(f"window {window} judged again on {late.labelled_rows} labelled flights: {r}"
                         for r in quality_reasons(late, limits))
    quality_dropped = bool(reasons)
    base = {"data_drift": data_drift, "quality_dropped": quality_dropped, "quality_drop": drop,
            "quality_reasons": reasons, "data_quality_incident": tuple(obs.missing_columns)}
    if not (data_drift or quality_dropped):
        return Decision(False, NO_DRIFT, drifted=False, **base)
    if history.attempts_in_episode and (history.last_attempt_at is None
                                        or now - history.last_attempt_at < limits.retry_after):
        return Decision(False, ALREADY_TRIGGERED, drifted=True, **base)  # the last attempt may still deploy
    if history.attempts_in_episode >= limits.max_attempts:
        return Decision(False, ATTEMPTS_EXHAUSTED, drifted=True, **base)
    if history.last_retrain_at is not None:
        left = (history.last_retrain_at + limits.cooldown - now).total_seconds()
        if left > 0:
            return Decision(False, COOLDOWN, drifted=True, cooldown_left_seconds=left, **base)
    return Decision(True, RETRAIN, drifted=True, **base)


def _quality_text(obs: Observation, decision: Decision, limits: Thresholds) -> str:
    if decision.quality_reasons:
        return "QUALITY FELL: " + "; ".join(decision.quality_reasons)
    if decision.quality_drop is not None:
        return (f"{obs.quality_metric} {obs.quality:.4f} vs training {obs.reference_quality:.4f} "
                f"(drop {decision.quality_drop:+.4f}, margin {limits.quality_drop_margin})")
    if obs.quality is None or obs.labelled_rows < limits.min_labelled_rows:
        return f"quality unknown ({obs.labelled_rows} labelled rows, need {limits.min_labelled_rows})"
    return f"{obs.quality_metric} {obs.quality:.4f} on {obs.labelled_rows} labelled rows, no training figure"


def explain(obs: Observation, decision: Decision, limits: Thresholds) -> str:
    """One log line with the decision and the numbers behind it."""
    verdict = "RETRAIN" if decision.retrain else "no retrain"
    extra = f", cool-down {decision.cooldown_left_seconds:.0f}s left" if decision.reason == COOLDOWN else ""
    incident = (f"; DATA-QUALITY INCIDENT: missing {', '.join(decision.data_quality_incident)}"
                if decision.data_quality_incident else "")
    return (
        f"{verdict} ({decision.reason}{extra}): rows {obs.rows} (min {limits.min_rows}), "
        f"drift {'detected' if obs.drift_detected else 'not detected'} (share {obs.drift_share:.3f}, "
        f"threshold {limits.drift_share}), {_quality_text(obs, decision, limits)}{incident}"
    )
