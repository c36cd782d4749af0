"""Drift report cost at 10k, 100k and 1M served rows, and what the sampling cap does to the verdict.

In a fresh MLOPS_HOME: Jan, Feb and Jul 2013 are ingested into Feast, and served-like
rows (point-in-time features, a model's probability, the label) are read for real
flights. The reference is a Jan sample the model did not see; the windows are July
(drifted weather) and Feb (same season) flights, drawn with replacement up to each size.
Each window goes through `monitoring.report.build`, as the monitoring DAG runs it:
sampling to `MLOPS_DRIFT_SAMPLE_CAP`, the drift and quality reports, HTML and JSON saved.
The verdict is then recomputed on the whole window (no cap) where that is affordable.

    python -m bench.drift_bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SIZES = (10_000, 100_000, 1_000_000)
UNCAPPED_UP_TO = 100_000  # Evidently on a million rows takes minutes: the point of the cap

CHILD = r'''
import json, sys, time
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
import settings
from features import compute, ingest, names, samples, store, tasks
from monitoring import report

sizes, uncapped_up_to = json.loads(sys.argv[1]), int(sys.argv[2])
cfg = settings.get()
samples.export()
batch = ingest.Batch("bench-drift").ingest([u for m in ("2013-01", "2013-02", "2013-07") for u in samples.drop(m)])
tasks.write_features(batch)

entity_columns = ["flight_id", "carrier", "flight", "tailnum", "origin", "dest", "route", "event_timestamp",
                  "distance", "dep_hour", "dep_dow", "is_late"]
flights = store.read_offline_table(store.FLIGHTS_TABLE)
month = flights["event_timestamp"].dt.month
picked = pd.concat([flights[month == m].sample(n=n, random_state=m) for m, n in ((1, 12000), (2, 6000), (7, 6000))])
entities = picked[entity_columns].copy()
entities["tailnum"] = entities["tailnum"].fillna("").astype(str)
fs = store.feature_store(apply=True)
rows = fs.get_historical_features(entity_df=entities, features=fs.get_feature_service(names.FEATURE_SERVICE)).to_df()
rows_month = rows["event_timestamp"].dt.month
january = rows[rows_month == 1]
train, reference_rows = january.iloc[:6000], january.iloc[6000:]
model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(compute.model_frame(train), train["is_late"])
for frame in (reference_rows, rows):
    frame["probability"] = model.predict_proba(compute.model_frame(frame))[:, 1]
rows["prediction"] = (rows["probability"] >= 0.3).astype("int64")
ref_frame = compute.model_frame(reference_rows)
ref_frame["is_late"] = reference_rows["is_late"].astype("int64").to_numpy()
ref_frame["probability"] = reference_rows["probability"].to_numpy()
ref = report.Reference(version="bench", run_id="bench", frame=ref_frame, metrics={}, decision_threshold=0.3)

results = []
for name, m in (("Jul (drifted)", 7), ("Feb (same season)", 2)):
    pool = rows[rows_month == m]
    for n in sizes:
        window = pool.sample(n=n, replace=True, random_state=n).reset_index(drop=True)
        t = time.perf_counter()
        summary = report.build(window, ref, model_name="bench", window={"id": f"{m}-{n}"}, cfg=cfg,
                               min_labelled_rows=cfg.monitor_min_rows)
        seconds = time.perf_counter() - t
        out = {"window": name, "rows": n, "seconds": seconds, "sampled_rows": summary["sampled_rows"],
               "share_capped": summary["drift_share"], "drifted_capped": summary["drifted_columns"]}
        if n <= uncapped_up_to:
            t = time.perf_counter()
            whole = report.drift(report.served_frame(window), report.served_frame(ref.frame),
                                 cfg.drift_column_threshold, cfg.drift_share_threshold)
            out.update(share_whole=whole.share, drifted_whole=whole.drifted, seconds_whole=time.perf_counter() - t,
                       max_score_gap=max(abs(whole.scores[c] - summary["column_scores"][c]) for c in whole.scores))
        results.append(out)
        print(json.dumps(out), file=sys.stderr, flush=True)
print(json.dumps({"cap": cfg.drift_sample_cap, "column_threshold": cfg.drift_column_threshold,
                  "share_threshold": cfg.drift_share_threshold, "results": results}))
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift_bench")
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
        env.update({"MLOPS_HOME": home, "PYTHONPATH": str(REPO)})
        samples = REPO / ".local" / "samples"
        if samples.exists():
            subprocess.run(["cp", "-r", str(samples), f"{home}/samples"], check=True)
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(SIZES), str(UNCAPPED_UP_TO)], env=env,
                             cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return 1
    result = json.loads(out.stdout.strip().splitlines()[-1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drift.json").write_text(json.dumps(result, indent=2))
    print(f"cap {result['cap']} rows; column threshold {result['column_threshold']}, "
          f"share threshold {result['share_threshold']}")
    print("| window | served rows | report s (capped) | drift share, capped | drift share, whole window "
          "| largest column-score gap |")
    print("|---|---|---|---|---|---|")
    for r in result["results"]:
        whole = f"{r['share_whole']:.2f} ({r['seconds_whole']:.1f} s)" if "share_whole" in r else "not run"
        gap = f"{r['max_score_gap']:.3f}" if "max_score_gap" in r else "–"
        print(f"| {r['window']} | {r['rows']:,} | {r['seconds']:.1f} | {r['share_capped']:.2f} | {whole} | {gap} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
