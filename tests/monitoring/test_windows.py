"""Monitoring windows by event time: a span of departures, a minimum of rows, nothing dropped or judged twice."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring import windows

DAY = windows.US_PER_DAY
T0 = int(np.datetime64("2013-07-01T05:00", "us").astype("int64"))


def stream(days: int, per_day: int, file_rows: int, seed: int = 0, stragglers: int = 0) -> list[np.ndarray]:
    """Departures as the server logs them: in request order, cut into files of `file_rows` rows."""
    rng = np.random.default_rng(seed)
    deps = np.sort(T0 + rng.integers(0, days * DAY, days * per_day))
    for i in rng.choice(len(deps) - 1, stragglers, replace=False):  # a late request for an earlier flight
        deps[i], deps[i + 1] = deps[i + 1], deps[i] - 3600 * 1_000_000
    return [deps[i:i + file_rows] for i in range(0, len(deps), file_rows)]


def run_monitor(files: list[np.ndarray], span_days: float, min_rows: int) -> tuple[list[windows.Window], dict]:
    """The sensor and the state, file by file as the log grows: every window, and which rows each judged."""
    cuts, consumed, until = {}, set(), None
    judged: dict[tuple[str, int], int] = {}
    out = []
    for n in range(1, len(files) + 1):
        while True:
            log = {f"f{i:04d}": d for i, d in enumerate(files[:n]) if f"f{i:04d}" not in consumed}
            w = windows.plan(log, cuts, until, int(span_days * DAY), min_rows)
            if w is None:
                break
            for name in w.files:
                d = log[name]
                since = w.since.get(name)
                for i in np.flatnonzero((d < w.end) & ((d >= since) if since is not None else True)):
                    judged[(name, int(i))] = judged.get((name, int(i)), 0) + 1
            consumed |= set(w.consumed)
            cuts = {**{f: c for f, c in cuts.items() if f not in w.consumed}, **w.carried}
            until = w.end
            out.append(w)
    return out, judged


def test_a_window_closes_once_the_traffic_passes_its_span_and_holds_its_rows():
    files = stream(days=7, per_day=1000, file_rows=250)
    assert windows.plan({f"f{i}": d for i, d in enumerate(files)}, {}, None, 7 * DAY, 2000) is None
    later = stream(days=8, per_day=1000, file_rows=250)
    w = windows.plan({f"f{i}": d for i, d in enumerate(later)}, {}, None, 7 * DAY, 2000)
    first = min(int(d.min()) for d in later)
    assert w is not None and w.start == first and w.end == first + 7 * DAY
    every = np.concatenate(later)
    assert w.rows == int((every < w.end).sum()) and w.pending == int((every >= w.end).sum()) > 0
    assert len(w.carried) == 1  # the one file holding the span's end: its later rows carry over


def test_too_few_rows_in_the_span_stretch_the_window_to_the_minimum():
    files = stream(days=20, per_day=100, file_rows=50)
    w = windows.plan({f"f{i}": d for i, d in enumerate(files)}, {}, None, 7 * DAY, 1000)
    assert w.rows == 1000 and w.end - w.start > 7 * DAY
    every = np.sort(np.concatenate(files))
    assert w.end == every[999] + 1


@pytest.mark.parametrize("file_rows", [37, 400, 2500])
def test_every_row_is_judged_once_and_windows_span_seven_days_however_the_log_is_cut(file_rows):
    files = stream(days=30, per_day=900, file_rows=file_rows, seed=file_rows, stragglers=40)
    found, judged = run_monitor(files, span_days=7, min_rows=2000)
    assert len(found) == 4  # days 0-7, 7-14, 14-21, 21-28; days 28-30 are still open
    assert all(w.end - w.start == 7 * DAY for w in found)
    assert all(b.start == a.end for a, b in zip(found, found[1:]))
    assert set(judged.values()) == {1}  # none judged twice
    last = found[-1].end
    expected = {(f"f{i:04d}", j) for i, d in enumerate(files) for j in np.flatnonzero(d < last)}
    assert set(judged) == expected  # none dropped: stragglers too, in the window after their departure's
    assert sum(w.rows for w in found) == len(expected)


def test_the_same_departures_make_the_same_windows_at_any_pace():
    """Row-counted windows depended on how fast requests came; departure spans do not."""
    slow, _ = run_monitor(stream(days=22, per_day=900, file_rows=60), 7, 2000)
    fast, _ = run_monitor(stream(days=22, per_day=900, file_rows=3000), 7, 2000)
    assert [(w.start, w.end, w.rows) for w in slow] == [(w.start, w.end, w.rows) for w in fast]


def test_rows_without_a_departure_are_judged_by_the_next_window():
    files = stream(days=8, per_day=500, file_rows=500)
    files[1] = files[1].copy()
    files[1][:3] = windows.NAT
    w = windows.plan({f"f{i}": d for i, d in enumerate(files)}, {}, None, 7 * DAY, 1000)
    assert w.start == min(int(d[d != windows.NAT].min()) for d in files)
    assert w.rows == sum(int((d < w.end).sum()) for d in files)  # NaT is the smallest int64: before the end


def test_iso_round_trip():
    assert windows.to_us(windows.iso(T0)) == T0
    assert windows.iso(T0) == "2013-07-01T05:00:00.000000Z"
