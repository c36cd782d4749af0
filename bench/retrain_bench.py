"""Drift retraining: does a challenger beat the winter champion on the drifted period?

The demo's story on the real data: v1 is trained on January-February 2013; July
arrives (weather drifted); a drift-started run trains v2 on all history plus the first
`NEW_TRAIN_FRACTION` of the new flights, picks on the next `NEW_VALID_FRACTION` and the
gate compares v1 and v2 on the newest flights (`training.split.time_split(new_since=...)`).
Here the variants of v2 are compared side by side, on the same test part:

- v1            : Jan-Feb, its own time split (70/15/15), fit on its train part (what the demo serves)
- v2            : today's drift run: all history + the first 50% of the new flights
- v2 old only   : the same history rows without the new ones (isolates what July adds)
- v2 w=bal      : the same rows, the new ones weighted so their total weight equals the old ones'
- v2 w=3        : the same rows, each new one weighted 3
- v2 recent4w   : the last 4 weeks of history (February) + the new train flights
- v2 new only   : the new train flights alone

Jan, Feb and Jul go through the dataops functions in a fresh MLOPS_HOME (as
bench/quality_bench.py), flights are joined point in time by `training.dataset.with_features`
and the families are `training.candidates.FAMILIES` (the training DAG fits all of them; the
challenger is the best on validation, `training.gate.best_candidate`). Two cuts of July:
the first 7.5 days (the demo) and the first 14 days. A flight counts only when its label
was known at the cut (`outcome_at <= cut`), as `training.dataset.labelled_flights` does.

    python -m bench.retrain_bench
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.common import RESULTS, embedded_home, ingest_months
MONTHS = ["2013-01", "2013-02", "2013-07"]
HISTORY_END = "2013-03-01"
CUTS = {"Jul 1-7.5": "2013-07-08T12:00:00", "Jul 1-10": "2013-07-11T00:00:00", "Jul 1-14": "2013-07-15T00:00:00",
        "Jul 1-21": "2013-07-22T00:00:00", "Jul 1-31": "2013-08-01T00:00:00"}
BOOTSTRAP = 300  # paired resamples of the test part for the AUC difference against v1
RECENT_WEEKS = 4
from training.metrics import HIGHER_IS_BETTER, METRICS, PRIMARY  # noqa: E402

SHOWN = (PRIMARY, *(m for m in METRICS if not HIGHER_IS_BETTER[m]), "calib_gap")


def calibration_gap(y, p) -> float:
    """Mean predicted probability minus the observed late rate (positive = over-predicts)."""
    return float(p.mean() - y.mean())


def main(argv: list[str] | None = None) -> int:
    cache = Path(argv[0]) if argv else None
    embedded_home("retrain-bench-")
    import numpy as np
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from features import compute, names
    from training import candidates, gate, metrics
    from training import split as splitting
    from training.dataset import with_features

    t_start = time.perf_counter()
    if cache is not None and cache.exists():
        frame = pd.read_parquet(cache)
        t_ingest = t_join = 0.0
    else:
        flights, t_ingest = ingest_months(MONTHS)
        t0 = time.perf_counter()
        last_cut = pd.Timestamp(max(CUTS.values()), tz="UTC")
        flights = flights[flights["event_timestamp"] <= last_cut]
        frame = with_features(flights).sort_values(["event_timestamp", "flight_id"], kind="stable")
        frame = frame.reset_index(drop=True)
        t_join = time.perf_counter() - t0
        if cache is not None:
            frame.to_parquet(cache)

    ts, known = frame["event_timestamp"], frame["outcome_at"]
    history_end = pd.Timestamp(HISTORY_END, tz="UTC")

    def fit_predict(family, rows, weights, *xs):
        model = candidates.build(family)
        x, y = compute.model_frame(rows), rows[names.LABEL].to_numpy(dtype="int64")
        if weights is None:
            model.fit(x, y)
        elif family == "logreg":
            model.fit(x, y, model__sample_weight=weights)
        else:
            model.fit(x, y, sample_weight=weights)
        return [model.predict_proba(compute.model_frame(r))[:, 1] for r in xs]

    def evaluate(y_valid, p_valid, y_test, p_test):
        threshold = metrics.decision_threshold(y_valid, p_valid)
        out = {f"valid_{k}": v for k, v in metrics.scores(y_valid, p_valid, threshold).items()}
        out.update({f"test_{k}": v for k, v in metrics.scores(y_test, p_test, threshold).items()})
        out["test_calib_gap"] = calibration_gap(y_test, p_test)
        return out

    # v1: the champion, as the demo's first (feature_table) run trains it on Jan-Feb.
    hist = frame[(ts < history_end) & (known <= ts[ts < history_end].max())]
    v1_as_of = hist["event_timestamp"].max()  # the champion's data_as_of tag
    v1_part = splitting.time_split(hist)
    v1_train, v1_valid = hist[v1_part == splitting.TRAIN], hist[v1_part == splitting.VALID]

    results, preds, labels = [], {}, {}
    with threadpool_limits(limits=1):
        for cut_name, cut in CUTS.items():
            cut_ts = pd.Timestamp(cut, tz="UTC")
            data = frame[(ts <= cut_ts) & (known <= cut_ts)].copy()
            data["part"] = splitting.time_split(data, new_since=v1_as_of)
            train = data[data["part"] == splitting.TRAIN]
            valid, test = data[data["part"] == splitting.VALID], data[data["part"] == splitting.TEST]
            new_train = train[train["event_timestamp"] > v1_as_of]
            old_train = train[train["event_timestamp"] <= v1_as_of]
            y_valid, y_test = valid[names.LABEL].to_numpy("int64"), test[names.LABEL].to_numpy("int64")
            info = {"cut": cut_name, "old_train": len(old_train), "new_train": len(new_train),
                    "valid": len(valid), "test": len(test), "dropped": int((data["part"] == "dropped").sum()),
                    "test_late_rate": float(y_test.mean()), "valid_late_rate": float(y_valid.mean()),
                    "ranges": splitting.ranges(data, data["part"])}
            print(json.dumps(info, default=str), flush=True)
            is_new = (train["event_timestamp"] > v1_as_of).to_numpy()
            recent = train[train["event_timestamp"] > v1_as_of - pd.Timedelta(weeks=RECENT_WEEKS)]
            variants = {
                "v1 (Jan-Feb)": (v1_train, None, v1_valid),
                "v2 today": (train, None, valid),
                "v2 old only": (old_train, None, valid),
                "v2 w=bal": (train, np.where(is_new, len(old_train) / max(len(new_train), 1), 1.0), valid),
                "v2 w=3": (train, np.where(is_new, 3.0, 1.0), valid),
                f"v2 recent{RECENT_WEEKS}w": (recent, None, valid),
                "v2 new only": (new_train, None, valid),
            }
            for variant, (rows, weights, own_valid) in variants.items():
                for family in candidates.FAMILIES:
                    t0 = time.perf_counter()
                    p_own, p_valid, p_test = fit_predict(family, rows, weights, own_valid, valid, test)
                    r = {"cut": cut_name, "variant": variant, "family": family, "train_rows": len(rows),
                         **evaluate(y_valid, p_valid, y_test, p_test),
                         # the validation the training DAG picks the challenger on (v1: Jan-Feb's own)
                         "own_valid_roc_auc": metrics.scores(own_valid[names.LABEL], p_own, 0.5)[PRIMARY],
                         "fit_s": time.perf_counter() - t0}
                    results.append(r)
                    preds[(cut_name, variant, family)] = p_test
                    labels[cut_name] = y_test
                    print(f"{cut_name:10} {variant:14} {family:8} rows {len(rows):6d} "
                          f"valid auc {r['valid_roc_auc']:.4f} test auc {r['test_roc_auc']:.4f} "
                          f"ll {r['test_log_loss']:.4f} brier {r['test_brier']:.4f} "
                          f"gap {r['test_calib_gap']:+.4f} ({r['fit_s']:.0f} s)", flush=True)

    # The challenger per variant: the family the DAG would pick (best on its own validation).
    from sklearn.metrics import roc_auc_score

    def diff_ci(cut_name, a, b):
        """90% paired bootstrap interval of AUC(a) - AUC(b) on the cut's test part."""
        y, pa, pb = labels[cut_name], preds[a], preds[b]
        rng, out = np.random.default_rng(0), []
        for _ in range(BOOTSTRAP):
            i = rng.integers(0, len(y), len(y))
            if 0 < y[i].sum() < len(i):
                out.append(roc_auc_score(y[i], pa[i]) - roc_auc_score(y[i], pb[i]))
        return np.percentile(out, [5, 95])

    print("\n| cut | variant | picked family | test ROC AUC | vs v1 | 90% CI | log loss | Brier | calib gap "
          "| hist_gb AUC | logreg AUC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cut_name in CUTS:
        rows = [r for r in results if r["cut"] == cut_name]
        picked = {}
        for variant in dict.fromkeys(r["variant"] for r in rows):
            cands = [{"family": r["family"], "valid": {PRIMARY: r["own_valid_roc_auc"]}, "r": r}
                     for r in rows if r["variant"] == variant]
            picked[variant] = gate.best_candidate(cands, PRIMARY)["r"]
        base = picked["v1 (Jan-Feb)"]["test_roc_auc"]
        v1_key = (cut_name, "v1 (Jan-Feb)", picked["v1 (Jan-Feb)"]["family"])
        for variant, r in picked.items():
            lo, hi = diff_ci(cut_name, (cut_name, variant, r["family"]), v1_key)
            by_family = {x["family"]: x["test_roc_auc"] for x in rows if x["variant"] == variant}
            print(f"| {cut_name} | {variant} | {r['family']} | {r['test_roc_auc']:.4f} | "
                  f"{r['test_roc_auc'] - base:+.4f} | [{lo:+.3f}, {hi:+.3f}] | {r['test_log_loss']:.4f} | {r['test_brier']:.4f} | "
                  f"{r['test_calib_gap']:+.4f} | {by_family.get('hist_gb', float('nan')):.4f} | "
                  f"{by_family.get('logreg', float('nan')):.4f} |")
    total = time.perf_counter() - t_start
    print(f"\ningest {t_ingest:.0f} s, join {t_join:.0f} s, total {total:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "retrain.json").write_text(json.dumps(
        {"cuts": CUTS, "v1_data_as_of": str(v1_as_of), "results": results, "ingest_s": t_ingest,
         "join_s": t_join, "total_s": total}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
