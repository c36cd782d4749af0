"""Model-quality metrics, defined once: training logs them, the gate compares them,
serving's validation recomputes them and monitoring measures them on served traffic.

- `METRICS` lists them; `HIGHER_IS_BETTER` gives each one's direction.
- `scores()` computes all of them. Its behaviour is the same for every caller:
  probabilities are clipped to [EPS, 1 - EPS] (log loss stays finite), and labels
  of a single class raise `SingleClass` (ROC AUC and PR AUC are undefined then;
  callers decide what that means for them).
- `decision_threshold()` picks the probability cut on validation data.

Standard library at import; numpy and sklearn are imported by the functions.
"""

from __future__ import annotations

METRICS = ("roc_auc", "pr_auc", "f1", "log_loss", "brier")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "f1": True, "log_loss": False, "brier": False}
PRIMARY = "roc_auc"  # the gate's and monitoring's metric unless MLOPS_GATE_METRIC says otherwise
# What serving's validation recomputes on a version's holdout and compares with the logged
# `test_*` values: the threshold-free metrics and Brier.
RECHECKED = ("roc_auc", "pr_auc", "brier")
EPS = 1e-15


class SingleClass(ValueError):
    """The labels hold one class only: rank metrics are undefined."""


def scores(labels, probabilities, threshold: float | None = None, decisions=None) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), F1, log loss and Brier score of `probabilities`.

    F1 is of `decisions` (0/1) when given (what a server answered), else of
    `probabilities >= threshold`.
    """
    import numpy as np
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, log_loss, roc_auc_score

    y = np.asarray(labels, dtype="int64")
    p = np.clip(np.asarray(probabilities, dtype="float64"), EPS, 1 - EPS)
    if len(np.unique(y)) < 2:
        raise SingleClass(f"metrics need both classes; the labels hold only {np.unique(y).tolist()}")
    if decisions is None:
        if threshold is None:
            raise ValueError("scores() needs a threshold or the decisions")
        decisions = p >= threshold
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "f1": float(f1_score(y, np.asarray(decisions, dtype="int64"), zero_division=0)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
    }


def decision_threshold(labels, probabilities) -> float:
    """The probability cut with the best F1 (chosen on validation data, never on the test)."""
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    # precision/recall have one more entry than thresholds (the point recall=0).
    p, r = precision[:-1], recall[:-1]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return float(np.clip(thresholds[int(np.argmax(f1))], 1e-6, 1 - 1e-6))


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in metrics.items()}


def improvement(metric: str, new: float, old: float) -> float:
    """How much better `new` is than `old` on `metric` (positive = better), whatever its direction."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; one of {sorted(HIGHER_IS_BETTER)}")
    return new - old if HIGHER_IS_BETTER[metric] else old - new
