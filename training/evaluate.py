"""Metrics and the decision threshold, defined once for candidates, champion and gate.

The definitions match serving's validation (`serving/validation.py`), which
recomputes the `test_*` metrics on the version's holdout and compares them.
"""

from __future__ import annotations

import numpy as np

METRICS = ("roc_auc", "pr_auc", "f1", "log_loss", "brier")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "f1": True, "log_loss": False, "brier": False}


def scores(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), F1 at `threshold`, log loss and Brier score."""
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, log_loss, roc_auc_score

    labels = np.asarray(labels, dtype="int64")
    p = np.asarray(probabilities, dtype="float64")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"metrics need both classes; the labels hold only {np.unique(labels).tolist()}")
    return {
        "roc_auc": float(roc_auc_score(labels, p)),
        "pr_auc": float(average_precision_score(labels, p)),
        "f1": float(f1_score(labels, p >= threshold, zero_division=0)),
        "log_loss": float(log_loss(labels, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(labels, p)),
    }


def decision_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The probability cut with the best F1 (chosen on validation data, never on the test)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    # precision/recall have one more entry than thresholds (the point recall=0).
    p, r = precision[:-1], recall[:-1]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return float(np.clip(thresholds[int(np.argmax(f1))], 1e-6, 1 - 1e-6))


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in metrics.items()}


def improvement(metric: str, challenger: float, champion: float) -> float:
    """How much better the challenger is on `metric` (positive = better), whatever its direction."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown gate metric {metric!r}; one of {sorted(HIGHER_IS_BETTER)}")
    return challenger - champion if HIGHER_IS_BETTER[metric] else champion - challenger
