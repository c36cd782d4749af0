"""DataOps scaling: one month, three months and the whole year dropped as one batch.

Each size runs in a fresh process (so peak RSS is that size's alone) with its own
MLOPS_HOME: validation + features + offline write + materialization, exactly the
functions the dataops DAG calls. The process first imports the libraries of these
stages that the preloading executor imports (the DAG's task processes inherit them);
that time is reported apart. Also: all twelve months dropped at once, each
processed exactly once.

    python -m bench.dataops_bench [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SIZES = {"1 month": ["2013-01"], "3 months": ["2013-01", "2013-02", "2013-03"],
         "12 months": [f"2013-{m:02d}" for m in range(1, 13)]}

CHILD = r'''
import importlib, json, sys, time
t_imports = time.perf_counter()
from ops.preload_executor import PRELOAD  # the DAG's task processes inherit these already imported
for name in PRELOAD:
    if name.startswith(("pandas", "pyarrow", "feast", "ibis", "features")):  # the ones dataops uses
        importlib.import_module(name)
t_imports = time.perf_counter() - t_imports
import pandas as pd
import storage
from features import ingest, samples, tasks
months, mode = json.loads(sys.argv[1]), sys.argv[2]
samples.export()
store = storage.get()
t0 = time.perf_counter()
if mode == "one_batch":
    for kind in ("flights", "weather"):
        df = pd.concat([pd.read_parquet(samples.sample_path(kind, m)) for m in months], ignore_index=True)
        store.write_parquet(store.url("landing", f"{kind}_{months[0]}_{months[-1]}.parquet"), df)
t_ready = time.perf_counter()
if mode == "one_batch":
    urls = [i["url"] for i in store.list_files(store.url("landing"))]
    batches = [urls]
else:
    batches = [samples.drop(m) for m in months]   # every month dropped, then processed batch by batch
timings = []
rows = 0
for i, urls in enumerate(batches):
    t = time.perf_counter()
    batch = ingest.Batch(f"bench-{i}").ingest(urls)
    t_valid = time.perf_counter()
    written = tasks.write_features(batch)
    t_feat = time.perf_counter()
    tasks.publish(batch, written)
    t_mat = time.perf_counter()
    rows += batch["rows_in"]
    timings.append({"validate": t_valid - t, "features": t_feat - t_valid, "materialize": t_mat - t_feat,
                    "total": t_mat - t, "rows": batch["rows_in"], "accepted": batch["rows_accepted"]})
import resource
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "batches": timings, "peak_rss_mib": peak, "imports_s": t_imports}))
'''


def run_once(months: list[str], mode: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-dataops-") as home:
        samples = REPO / ".local" / "samples"
        env = {**os.environ, "MLOPS_HOME": home, "PYTHONPATH": str(REPO)}
        if samples.exists():
            subprocess.run(["cp", "-r", str(samples), f"{home}/samples"], check=True)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(months), mode], env=env, cwd=REPO,
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["process_wall_s"] = wall
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = []
    for label, months in SIZES.items():
        runs = [run_once(months, "one_batch") for _ in range(args.repeat)]
        compute = statistics.median(sum(b["total"] for b in r["batches"]) for r in runs)
        rows = runs[0]["rows"]
        table.append({"size": label, "rows": rows, "median_s": compute, "rows_per_s": rows / compute,
                      "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                      "imports_s": statistics.median(r["imports_s"] for r in runs),
                      "stages_s": {k: statistics.median(r["batches"][0][k] for r in runs)
                                   for k in ("validate", "features", "materialize")}})
    many = run_once(SIZES["12 months"], "many_batches")
    result = {"scaling": table, "many_batches": {
        "batches": len(many["batches"]), "rows": many["rows"],
        "total_s": sum(b["total"] for b in many["batches"]),
        "per_batch_s": [round(b["total"], 2) for b in many["batches"]],
        "accepted": sum(b["accepted"] for b in many["batches"])}}
    (RESULTS / "dataops.json").write_text(json.dumps(result, indent=2))
    print(f"medians of {args.repeat} runs, each in a fresh process after the preloaded imports "
          f"({table[0]['imports_s']:.1f} s, not counted)")
    print("| batch | rows | median s | rows/s | peak RSS MiB | validate s | features s | materialize s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(table, key=lambda r: r["rows"]):
        s = r["stages_s"]
        print(f"| {r['size']} | {r['rows']:,} | {r['median_s']:.1f} | {r['rows_per_s']:,.0f} | "
              f"{r['peak_rss_mib']:.0f} | {s['validate']:.1f} | {s['features']:.1f} | {s['materialize']:.1f} |")
    m = result["many_batches"]
    print(f"\n12 monthly batches one after another: {m['total_s']:.1f}s total, per batch {m['per_batch_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
