"""What monitoring remembers between runs, kept as JSON in storage.

    monitoring/<model>/state.json              written only by the `monitoring` DAG (one run at a time)
    monitoring/<model>/baselines/v<N>.json     written only by `monitoring_baseline` on `deployed_model`

`state.json` holds, per deployed version, the inference files already reported
(so the sensor counts only new rows), the files whose later rows carry over to the
next window with their cut, the end of the last window (`monitoring.windows`), the
current drift episode and the recent windows with their decisions; and, model-wide, the last drift-triggered
retraining (the cool-down clock). One file, written atomically, so a crash never
leaves the episode and the cool-down disagreeing.

A version's baseline is its deployment time: log files written before it (the
serving DAG's validation and smoke requests) are not traffic and never count.
The transitions (`record_window`) are pure functions over the dict, so the loop
guard is tested without storage.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import storage
from monitoring.policy import ATTEMPTS_EXHAUSTED, Decision, History

KEEP_WINDOWS = 200  # per version, for the log of recent decisions


def _root(model_name: str) -> str:
    return storage.get().url("monitoring", model_name)


def state_url(model_name: str) -> str:
    return f"{_root(model_name)}/state.json"


def baseline_url(model_name: str, version: str) -> str:
    return f"{_root(model_name)}/baselines/v{version}.json"


def empty(model_name: str) -> dict:
    return {"model_name": model_name, "last_retrain": None, "versions": {}}


def load(model_name: str) -> dict:
    store = storage.get()
    url = state_url(model_name)
    return store.read_json(url) if store.exists(url) else empty(model_name)


def save(state: dict) -> None:
    storage.get().write_json(state_url(state["model_name"]), state)


def version_state(state: dict, version: str) -> dict:
    """The version's entry; a version never seen starts with a fresh, empty baseline."""
    entry = state["versions"].get(str(version)) or {"consumed": [], "episode": None, "episodes": 0, "windows": []}
    return {"carried": {}, "judged_until": None, **entry}  # state files from before event-time windows


def consumed_files(state: dict, version: str) -> set[str]:
    return set(version_state(state, version)["consumed"])


def carried_files(state: dict, version: str) -> dict[str, str]:
    """{file name: cut}: files read by a window whose rows departing from the cut on are not judged yet."""
    return dict(version_state(state, version)["carried"])


def judged_until(state: dict, version: str) -> str | None:
    """The end of the version's last window: the next one starts there."""
    return version_state(state, version)["judged_until"]


def history(state: dict, version: str) -> History:
    """The policy's view of the past: attempts in this episode and the last one; last retrain of the model."""
    episode = version_state(state, version)["episode"] or {}
    last = state.get("last_retrain")
    attempts = episode.get("attempts", 1 if episode.get("retrain_at") else 0)  # state files before the count
    return History(
        attempts_in_episode=attempts,
        last_attempt_at=datetime.fromisoformat(episode["retrain_at"]) if episode.get("retrain_at") else None,
        last_retrain_at=datetime.fromisoformat(last["at"]) if last else None,
    )


def exhaustion_alerted(state: dict, version: str) -> bool:
    """Was a person already told that this episode's retrainings are exhausted?"""
    episode = version_state(state, version)["episode"] or {}
    return bool(episode.get("exhausted_at"))


def recorded_window(state: dict, version: str, window_id: str) -> dict | None:
    """The record of a window already judged (a re-run task replays its decision instead of re-judging)."""
    for entry in version_state(state, version)["windows"]:
        if entry["window"] == window_id:
            return entry
    return None


def last_judged(state: dict, version: str) -> dict | None:
    """The version's latest window that was judged (not one recorded as unjudged)."""
    for entry in reversed(version_state(state, version)["windows"]):
        if "error" not in entry:
            return entry
    return None


def rejudged(state: dict, version: str, window_id: str, labelled_rows: int) -> dict:
    """A new state where the window's quality counts as judged on `labelled_rows` labels."""
    new = copy.deepcopy(state)
    entry = version_state(new, version)
    for window in entry["windows"]:
        if window["window"] == window_id:
            window["rejudged_labelled_rows"] = labelled_rows
    new["versions"][str(version)] = entry
    return new


def record_window(
    state: dict, version: str, window_id: str, files: list[str], decision: Decision, numbers: dict, now: datetime,
    carried: dict[str, str] | None = None, end: str | None = None,
) -> dict:
    """A new state with the window's rows judged and its decision applied to the episode.

    `files` were read by the window; those in `carried` ({name: cut}) still hold rows
    departing from the cut on, the others are consumed. `end` is where the next
    window starts.

    Drifted windows open (or continue) an episode; a clean window closes it; a
    window too small to judge leaves it as it is. A retrain decision stamps the
    episode and starts the model-wide cool-down.
    """
    new = copy.deepcopy(state)
    entry = copy.deepcopy(version_state(new, version))
    carried = carried or {}
    entry["consumed"] = sorted(set(entry["consumed"]) | (set(files) - set(carried)))
    entry["carried"] = {f: c for f, c in {**entry["carried"], **carried}.items() if f not in entry["consumed"]}
    if end is not None:
        entry["judged_until"] = max(end, entry["judged_until"] or end)
    at = now.astimezone(timezone.utc).isoformat()
    if decision.drifted is True and entry["episode"] is None:
        entry["episodes"] += 1
        entry["episode"] = {"number": entry["episodes"], "started_at": at, "retrain_at": None, "retrain_window": None,
                            "attempts": 0}
    elif decision.drifted is False:
        entry["episode"] = None
    if decision.retrain:
        before = entry["episode"].get("attempts", 1 if entry["episode"].get("retrain_at") else 0)
        entry["episode"].update(retrain_at=at, retrain_window=window_id, attempts=before + 1)
        new["last_retrain"] = {"at": at, "version": str(version), "window": window_id}
    if decision.reason == ATTEMPTS_EXHAUSTED:
        entry["episode"].setdefault("exhausted_at", at)
    episode = entry["episode"]["number"] if entry["episode"] else None
    entry["windows"] = (entry["windows"] + [
        {"window": window_id, "at": at, "episode": episode, "decision": decision.as_dict(), **numbers}
    ])[-KEEP_WINDOWS:]
    new["versions"][str(version)] = entry
    return new


# -- baselines -----------------------------------------------------------------------------
def load_baseline(model_name: str, version: str) -> dict | None:
    store = storage.get()
    url = baseline_url(model_name, version)
    return store.read_json(url) if store.exists(url) else None


def record_baseline(model_name: str, version: str, deployed_at: datetime, **info) -> dict:
    """Start the version's baseline at its deployment (the latest one, if it was deployed again)."""
    current = load_baseline(model_name, version)
    if current and datetime.fromisoformat(current["deployed_at"]) >= deployed_at:
        return current
    at = deployed_at.astimezone(timezone.utc).isoformat()
    baseline = {"model_name": model_name, "version": str(version), "deployed_at": at, **info}
    storage.get().write_json(baseline_url(model_name, version), baseline)
    return baseline
