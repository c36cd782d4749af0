"""The candidate model families, one task instance each.

Both answer one row at a time without a worker pool: the model server calls
`predict_proba` per request, where a pool (`n_jobs` > 1) costs more than the
prediction. LogisticRegression has no `n_jobs` effect since scikit-learn 1.8 and
HistGradientBoosting has none at all (its OpenMP loop is cheap on one row).
Both are deterministic (fixed seeds), so the same data gives the same model.
sklearn is imported inside `build`, so the DAG file can import `FAMILIES`.
"""

from __future__ import annotations

from typing import Any

FAMILIES = ("logreg", "hist_gb")
SEED = 0

PARAMS: dict[str, dict[str, Any]] = {
    # Imputation with missing-indicators, then scaling: weather gusts and plane
    # attributes are often missing, and the indicator is itself informative.
    "logreg": {"impute": "median", "add_indicator": True, "C": 0.5, "max_iter": 1000},
    # Native NaN handling. Small trees, large leaves and a slow rate: on Jan-Mar 2013
    # deeper trees fit the training weeks better and the test weeks worse.
    "hist_gb": {"learning_rate": 0.05, "max_iter": 200, "max_leaf_nodes": 15, "min_samples_leaf": 200,
                "l2_regularization": 1.0, "early_stopping": False, "random_state": SEED},
}


def build(family: str):
    """An unfitted estimator of `family` (a Pipeline or a bare classifier with predict_proba)."""
    if family == "logreg":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        p = PARAMS[family]
        return Pipeline([
            ("impute", SimpleImputer(strategy=p["impute"], add_indicator=p["add_indicator"])),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(C=p["C"], max_iter=p["max_iter"])),
        ])
    if family == "hist_gb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(**PARAMS[family])
    raise ValueError(f"unknown candidate family {family!r}; one of {FAMILIES}")
