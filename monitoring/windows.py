"""Monitoring windows by event time: each window covers a span of scheduled departures.

Counting rows instead made a window's meaning depend on the traffic's pace: 2,000
requests replayed quickly covered two days of departures, and a two-day window
holds two weekdays, so `dep_dow` "drifted" in every window.

The rule, over the rows of the production version not yet judged:
- a window starts where the version's last window ended (its first window: at the
  first departure served), so windows tile the departures;
- it closes once the traffic has moved past `span` (a row departs at or after
  start + span) and it holds at least `min_rows` rows; with fewer rows in the span it
  stretches to the `min_rows`-th departure;
- it judges every unjudged row departing before its end, late rows of an earlier
  departure included; rows departing at or after the end carry over to the next
  window. No row is dropped and none is judged twice.

A log file read by a window had all its rows before the window's end judged, so the
state keeps, per file still holding later rows, that cut ("carried"); a file whose
rows were all judged is consumed and never read again.

Times are int64 microseconds since the epoch (NaT, a row without a departure, is
the smallest int64: judged by the next window). Pure functions over numpy arrays:
the trigger imports this module, so no pandas here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NAT = np.iinfo(np.int64).min
US_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class Window:
    start: int  # first departure the window spans (µs since the epoch)
    end: int  # rows departing before it are judged now
    rows: int  # rows the window judges
    files: list[str]  # the files it reads
    carried: dict[str, int] = field(default_factory=dict)  # file -> cut: its rows from `end` on carry over
    since: dict[str, int] = field(default_factory=dict)  # file -> earlier cut: its rows before it were judged
    pending: int = 0  # unjudged rows left after it

    @property
    def consumed(self) -> list[str]:
        return [f for f in self.files if f not in self.carried]

    def as_dict(self) -> dict:
        return {"start": iso(self.start), "end": iso(self.end), "rows": self.rows, "files": list(self.files),
                "carried": {f: iso(c) for f, c in self.carried.items()},
                "since": {f: iso(c) for f, c in self.since.items()}, "pending": self.pending}


def iso(us: int) -> str:
    return np.datetime64(int(us), "us").astype(str) + "Z"


def to_us(value: str | None) -> int | None:
    """An ISO time (with or without a `Z`/offset; read as UTC) as µs since the epoch."""
    if value is None:
        return None
    from datetime import datetime, timezone

    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return int(round(t.timestamp() * 1_000_000))


def unjudged(departures: np.ndarray, cut: int | None) -> np.ndarray:
    """The file's departures not judged yet: all of them, or those at or after its cut."""
    return departures if cut is None else departures[departures >= cut]


def plan(files: dict[str, np.ndarray], cuts: dict[str, int], judged_until: int | None, span_us: int,
         min_rows: int) -> Window | None:
    """The next window over `files` ({file: departures}), or None while it is still open."""
    left = {f: unjudged(d, cuts.get(f)) for f, d in files.items()}
    left = {f: d for f, d in left.items() if len(d)}
    if not left:
        return None
    every = np.sort(np.concatenate(list(left.values())))
    known = every[every != NAT]
    ahead = known if judged_until is None else known[known >= judged_until]
    if not len(ahead) or len(every) < min_rows:
        return None
    start = int(ahead[0]) if judged_until is None else judged_until  # windows tile the departures
    if every[-1] < start + span_us:
        return None  # the traffic has not moved past the span yet
    end = start + span_us
    if np.searchsorted(every, end, side="left") < min_rows:
        end = int(every[min_rows - 1]) + 1
    read, carried, since = [], {}, {}
    for f, d in left.items():
        if not (d < end).any():
            continue
        read.append(f)
        if f in cuts:
            since[f] = cuts[f]
        if (d >= end).any():
            carried[f] = end
    rows = int(np.searchsorted(every, end, side="left"))
    return Window(start=start, end=end, rows=rows, files=sorted(read), carried=carried, since=since,
                  pending=len(every) - rows)
