"""The chain benchmark's accounting: every second of T_e2e lands in exactly one part."""

from __future__ import annotations

from datetime import datetime, timezone

from bench.chain_bench import CATEGORIES, PATH, breakdown, per_task


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def synthetic_run(landed: float = 1000.0, wait: float = 0.25, run: float = 1.0, hop: float = 0.5):
    """A chain where every task waits `wait`, runs `run`, and each asset hop takes `hop`."""
    t = landed + 3.0  # the sensor fires 3 s after the drop
    runs = {"dataops": {"start": landed - 60, "tasks": {"wait_for_landing_files": {"start": landed - 60, "end": t}}}}
    events = {}
    for dag_id, path in PATH.items():
        if dag_id != "dataops":
            t += hop
            runs[dag_id] = {"start": t, "tasks": {}}
        for task_id, _ in path:
            runs[dag_id]["tasks"][task_id] = {"start": t + wait, "end": t + wait + run}
            t += wait + run
        asset = {"dataops": "feature_table", "training": "registered_model", "serving": "deployed_model"}[dag_id]
        events[asset] = {"timestamp": _iso(t)}
    return {"landed": landed, "t_e2e": t - landed, "runs": runs, "events": events}


def test_the_parts_add_up_to_the_end_to_end_time():
    tasks = sum(len(p) for p in PATH.values())
    compute = {stage: 0.4 for path in PATH.values() for _, stage in path}
    run = synthetic_run()
    parts = breakdown(run, compute)

    assert abs(parts["detection"] - 3.0) < 1e-6
    assert abs(parts["asset_hop"] - 2 * 0.5) < 1e-6
    assert abs(parts["queueing"] - tasks * 0.25) < 1e-6
    assert abs(parts["compute"] - tasks * 0.4) < 1e-6
    assert abs(parts["start_imports"] - tasks * 0.6) < 1e-6
    assert abs(parts["residual"]) < 1e-6
    assert abs(sum(parts[c] for c in CATEGORIES) - run["t_e2e"]) < 1e-6


def test_per_task_reports_the_median_wait_and_run_of_every_task_on_the_path():
    compute = {stage: 0.1 for path in PATH.values() for _, stage in path}
    rows = per_task([synthetic_run(wait=0.2), synthetic_run(wait=0.3), synthetic_run(wait=0.9)], compute)

    assert [r["task"] for r in rows] == [f"{d}.{t}" for d, path in PATH.items() for t, _ in path]
    assert all(abs(r["wait_s"] - 0.3) < 1e-6 and abs(r["run_s"] - 1.0) < 1e-6 for r in rows)


def test_scaling_efficiency_is_one_when_two_workers_halve_the_time():
    from bench.celery_bench import efficiency

    assert efficiency(100.0, 50.0) == 1.0
    assert efficiency(100.0, 100.0) == 0.5


def test_replay_latencies_split_by_whether_a_training_or_serving_run_was_active():
    from bench.replay_bench import split_latencies

    latencies = [(10.0, 5.0), (20.0, 50.0), (21.0, 70.0), (30.0, 6.0)]
    split = split_latencies(latencies, busy=[(19.0, 25.0)])
    assert split["answers"] == 4
    assert split["during_chain"] == {"answers": 2, "p50_ms": 50.0, "p99_ms": 70.0}
    assert split["otherwise"] == {"answers": 2, "p50_ms": 5.0, "p99_ms": 6.0}


def _result(profile: str, scale: float) -> dict:
    compute = {stage: 0.1 for path in PATH.values() for _, stage in path}
    runs = [synthetic_run(wait=0.2 * scale), synthetic_run(wait=0.3 * scale)]
    return {"profile": profile, "pairs": 2, "t_e2e_s": 20.0 * scale, "t_min_s": 8.0, "R": 2.5 * scale,
            "breakdown_s": breakdown(runs[0], compute), "t_e2e_runs_s": [20.0 * scale, 21.0 * scale],
            "t_min_runs_s": [8.0, 8.1], "stack_up_s": 60.0 * scale, "loadavg_before": [1.0, 1.0, 1.0],
            "loadavg_after": [2.0, 1.5, 1.0], "per_task": per_task(runs, compute)}


def test_side_by_side_has_a_column_per_profile_and_a_row_per_task_on_the_path():
    from bench.chain_bench import side_by_side

    lines = side_by_side([_result("embedded", 1.0), _result("celery", 2.0)])

    assert lines[0] == "| | embedded | celery |"
    assert all(line.count("|") == 4 for line in lines)
    r = next(line for line in lines if line.startswith("| **R"))
    assert "**2.50**" in r and "**5.00**" in r
    for dag_id, path in PATH.items():
        for task_id, _ in path:
            assert sum(line.startswith(f"| {dag_id}.{task_id} ") for line in lines) == 1


def test_bench_passes_the_options_after_the_name_to_that_benchmark():
    from bench.__main__ import main, split

    assert split(["chain", "--profile", "embedded", "celery"]) == (["chain"], ["--profile", "embedded", "celery"])
    assert split(["serving", "dataops"]) == (["serving", "dataops"], [])
    assert split([]) == ([], [])
    assert main(["serving", "dataops", "--pairs", "1"]) == 2  # options for two benchmarks: refused


def test_a_failed_celery_run_keeps_its_memory_and_the_workloads_it_finished():
    from bench.celery_bench import summarize

    one = {"workers": 1, "months": {"deployed_model_s": 300.0}, "error": "AssertionError: failed",
           "peak_memory": {"airflow-worker-1": {"rss_mib": 1500.0, "pss_mib": 900.0, "processes": 6}}}
    two = {"workers": 2, "months": {"deployed_model_s": 200.0}, "candidates": {"train_wall_s": 40.0},
           "peak_memory": {}}
    result = summarize([one, two])

    assert result["efficiency"] == {"months": 0.75}
    assert result["runs"][0]["peak_memory"]["airflow-worker-1"]["pss_mib"] == 900.0


def test_a_workers_memory_counts_processes_that_moved_to_a_process_group_of_their_own():
    """Airflow's task supervisor setpgid()s every task process: the worker's session still holds it."""
    import os
    import subprocess
    import sys

    from bench.celery_bench import members

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], process_group=0)
    try:
        assert os.getpgid(child.pid) != os.getpgid(0)
        pids = [p.pid for p in members({"me": os.getsid(0)})["me"]]
        assert child.pid in pids and os.getpid() in pids
    finally:
        child.kill()
        child.wait()
