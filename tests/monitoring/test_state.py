"""Monitoring state: episodes, cool-down, baselines, re-runs, and the loop guard."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from monitoring import policy, state, tasks
from monitoring.policy import Observation, Thresholds

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
LIMITS = Thresholds(min_rows=2000, drift_share=0.5, quality_drop_margin=0.05, cooldown=timedelta(minutes=30))
DRIFTED = Observation(rows=2500, drift_share=0.75, drift_detected=True)
CLEAN = Observation(rows=2500, drift_share=0.10, drift_detected=False)
SMALL = Observation(rows=10, drift_share=1.0, drift_detected=True)


def judge(st: dict, version: str, window: str, seen: Observation, now: datetime) -> tuple[dict, policy.Decision]:
    """One monitoring run without storage: decide, then record (what `tasks.judge_window` does)."""
    decision = policy.decide(seen, state.history(st, version), LIMITS, now)
    return state.record_window(st, version, window, [f"{window}.parquet"], decision, {}, now), decision


def test_episode_opens_on_drift_survives_small_windows_and_closes_on_a_clean_one():
    st = state.empty("m")
    st, first = judge(st, "1", "w1", DRIFTED, T0)
    assert first.retrain and state.version_state(st, "1")["episode"]["retrain_window"] == "w1"
    st, _ = judge(st, "1", "w2", SMALL, T0 + timedelta(minutes=1))
    assert state.version_state(st, "1")["episode"]["number"] == 1
    st, clean = judge(st, "1", "w3", CLEAN, T0 + timedelta(minutes=2))
    assert clean.reason == policy.NO_DRIFT and state.version_state(st, "1")["episode"] is None
    st, again = judge(st, "1", "w4", DRIFTED, T0 + timedelta(minutes=3))
    assert again.reason == policy.COOLDOWN  # a new episode, but the model-wide cool-down still runs
    assert state.version_state(st, "1")["episode"]["number"] == 2
    st, later = judge(st, "1", "w5", DRIFTED, T0 + timedelta(minutes=31))
    assert later.retrain
    assert state.version_state(st, "1")["consumed"] == [f"w{i}.parquet" for i in range(1, 6)]
    assert st["last_retrain"] == {"at": (T0 + timedelta(minutes=31)).isoformat(), "version": "1", "window": "w5"}


def test_record_window_leaves_the_input_state_untouched():
    before = state.empty("m")
    after, _ = judge(before, "1", "w1", DRIFTED, T0)
    assert before == state.empty("m") and after != before


def test_loop_guard_one_drift_episode_one_retraining_per_deployed_version():
    """Drifted traffic that never stops, judged every 2 minutes for 3 hours.

    Each drift-triggered retraining deploys a new version 5 minutes later (the
    worst case: every retrain passes the gate), and the new version sees the same
    drifted traffic from a fresh baseline.
    """
    st = state.empty("m")
    deployed, next_deploy = "1", None
    retrains: Counter[str] = Counter()
    retrain_times = []
    for i in range(90):
        now = T0 + timedelta(minutes=2 * i)
        if next_deploy and now >= next_deploy[1]:
            deployed, next_deploy = next_deploy[0], None
        st, decision = judge(st, deployed, f"v{deployed}-w{i}", DRIFTED, now)
        if decision.retrain:
            retrains[deployed] += 1
            retrain_times.append(now)
            next_deploy = (str(int(deployed) + 1), now + timedelta(minutes=5))
    assert len(retrains) > 3 and max(retrains.values()) == 1, retrains
    assert [b - a >= LIMITS.cooldown for a, b in zip(retrain_times, retrain_times[1:])] == [True] * (len(retrains) - 1)
    assert sum(1 for t in retrain_times if t < T0 + timedelta(minutes=30)) == 1  # the demo's 10 minutes: one


def test_monitor_decide_over_the_same_drifted_traffic(monitor_env):
    """`tasks.judge_window` with its stored state: one retrain per version and episode, re-runs replay."""

    def summary(window: str, share: float, version: str = "1") -> dict:
        return {"model_name": monitor_env.model_name, "model_version": version, "rows": 2500,
                "drift_share": share, "drift_detected": share >= monitor_env.drift_share_threshold,
                "drifted_columns": ["temp"], "missing_columns": [], "failed_tests": ["Share of Drifted Columns"],
                "report_path": f"file:///r/{window}.html",
                "quality": {"metric": "roc_auc", "value": None, "reference": 0.7, "labelled_rows": 0},
                "window": {"id": window, "files": [f"{window}.parquet"]}}

    decisions = [tasks.judge_window(summary(f"w{i}", 0.75), now=T0 + timedelta(minutes=i)) for i in range(5)]
    assert [d["reason"] for d in decisions] == ["retrain"] + ["already_triggered"] * 4
    replay = tasks.judge_window(summary("w0", 0.75), now=T0 + timedelta(hours=5))
    assert replay == decisions[0]  # the emitting task's retry still sees "retrain"
    new_version = tasks.judge_window(summary("x0", 0.75, version="2"), now=T0 + timedelta(minutes=monitor_env.retrain_cooldown_minutes / 2))
    assert new_version["reason"] == "cooldown"
    stored = state.load(monitor_env.model_name)
    assert set(stored["versions"]) == {"1", "2"}
    assert state.consumed_files(stored, "1") == {f"w{i}.parquet" for i in range(5)}
    assert stored["last_retrain"]["window"] == "w0"


def test_baseline_keeps_the_latest_deployment(monitor_env):
    name = monitor_env.model_name
    first = tasks.record_baselines([
        {"extra": {"model_name": name, "version": "3", "previous_version": "2"}, "timestamp": T0},
        {"extra": {"note": "no version"}, "timestamp": T0},
    ])
    assert [b["version"] for b in first] == ["3"]
    state.record_baseline(name, "3", T0 - timedelta(hours=1))  # an older event replayed: ignored
    assert state.load_baseline(name, "3")["deployed_at"] == T0.isoformat()
    state.record_baseline(name, "3", T0 + timedelta(hours=1), previous_version="4")  # deployed again
    assert state.load_baseline(name, "3")["deployed_at"] == (T0 + timedelta(hours=1)).isoformat()
    assert state.load_baseline(name, "9") is None


def test_no_silent_stop_a_retraining_that_never_deploys_is_retried_bounded_then_alerted(monitor_env, home):
    """Every drift-triggered retraining fails to deploy: v1 keeps serving drifted traffic.

    Judged every 2 minutes for 4 hours: the policy retries after `retry_after`, at most
    `max_attempts` times in the episode, and then a person is told, once.
    """
    import json

    import alerts
    import settings

    cfg = settings.get()
    limits = policy.Thresholds.from_settings(cfg)
    decisions = []
    for i in range(120):
        summary = {"model_name": cfg.model_name, "model_version": "1", "rows": 2500, "drift_share": 0.3,
                   "drift_detected": True, "drifted_columns": ["temp", "dewp"], "missing_columns": [],
                   "failed_tests": ["Share of Drifted Columns: Less 0.080"], "report_path": f"file:///r/w{i}.html",
                   "quality": {"metric": "roc_auc", "value": None, "reference": 0.7, "labelled_rows": 0},
                   "window": {"id": f"w{i:03d}", "files": [f"w{i:03d}.parquet"]}}
        decisions.append((T0 + timedelta(minutes=2 * i), tasks.judge_window(summary, now=T0 + timedelta(minutes=2 * i))))
    attempts = [t for t, d in decisions if d["retrain"]]
    assert len(attempts) == limits.max_attempts == 3
    assert [b - a >= limits.retry_after for a, b in zip(attempts, attempts[1:])] == [True, True]
    exhausted = [t for t, d in decisions if d["reason"] == policy.ATTEMPTS_EXHAUSTED]
    assert exhausted and exhausted[0] >= attempts[-1] + limits.retry_after
    sent = [json.loads(line) for line in cfg.home.joinpath(*alerts.ALERTS_FILE).read_text().splitlines()]
    told = [a for a in sent if a["kind"] == "retraining_exhausted"]
    assert len(told) == 1 and "after 3 retrainings" in told[0]["title"]
