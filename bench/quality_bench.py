"""Model quality with and without the origin congestion view, side by side in one run.

Fixed split: train on the flights departing January-June 2013, test on July-August.
Jan-Aug go through the dataops stage's functions (validation, feature rows, offline
tables) in a fresh MLOPS_HOME, one monthly batch after another; the training and
test flights are joined point in time by `training.dataset.with_features`, as of
PREDICTION_LEAD before each departure, exactly as training joins them. The model is
the production candidate family HistGradientBoosting (`training.candidates`), once
on the columns before the congestion view and once on all of MODEL_FEATURES.

    python -m bench.quality_bench
"""

from __future__ import annotations

import json
import sys
import time

from bench.common import RESULTS, embedded_home, ingest_months
MONTHS = [f"2013-{m:02d}" for m in range(1, 9)]
TRAIN = ("2013-01-01", "2013-07-01")  # departures in [start, end), UTC
TEST = ("2013-07-01", "2013-09-01")


def main(argv: list[str] | None = None) -> int:
    embedded_home("quality-bench-")
    import pandas as pd

    from features import compute, names
    from training import candidates, metrics
    from training.dataset import with_features

    flights, t_ingest = ingest_months(MONTHS)
    t0 = time.perf_counter()
    ts = flights["event_timestamp"]

    def between(lo: str, hi: str):
        return flights[(ts >= pd.Timestamp(lo, tz="UTC")) & (ts < pd.Timestamp(hi, tz="UTC"))]

    train, test = with_features(between(*TRAIN)), with_features(between(*TEST))
    t_join = time.perf_counter() - t0

    without = [c for c in names.MODEL_FEATURES if c not in names.CONGESTION_FEATURES]
    rows = []
    for label, columns in (("without congestion", without), ("with congestion", names.MODEL_FEATURES)):
        t0 = time.perf_counter()
        model = candidates.build("hist_gb").fit(compute.model_frame(train)[columns], train[names.LABEL])
        p = model.predict_proba(compute.model_frame(test)[columns])[:, 1]
        s = metrics.scores(test[names.LABEL], p, threshold=0.5)
        rows.append({"features": label, "columns": len(columns), "roc_auc": s["roc_auc"], "pr_auc": s["pr_auc"],
                     "fit_s": time.perf_counter() - t0})
    result = {"split": {"train": TRAIN, "test": TEST}, "train_rows": len(train), "test_rows": len(test),
              "test_late_rate": float(test[names.LABEL].mean()), "family": "hist_gb",
              "params": candidates.PARAMS["hist_gb"], "ingest_s": t_ingest, "join_s": t_join, "models": rows,
              "congestion_coverage": float(test[names.CONGESTION_FEATURES[0]].notna().mean())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(result, indent=2, default=str))

    print(f"HistGradientBoosting, train {TRAIN[0]}..{TRAIN[1]} ({len(train):,} flights), "
          f"test {TEST[0]}..{TEST[1]} ({len(test):,} flights, {result['test_late_rate']:.1%} late)")
    print("| features | columns | ROC AUC | PR AUC |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['features']} | {r['columns']} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} |")
    print(f"\ningest Jan-Aug {t_ingest:.0f} s, point-in-time join {t_join:.0f} s, "
          f"congestion found for {result['congestion_coverage']:.1%} of test flights")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
