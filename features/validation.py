"""Validation of landing files: recognise the kind, check schema, types and rows.

A file that cannot be read, or whose columns match no known kind, is rejected
whole. Otherwise every row is either accepted or rejected with a readable
reason, so `rows_in == len(accepted) + len(rejected)` always holds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

FLIGHTS_COLUMNS = {
    "year": "num", "month": "num", "day": "num", "dep_time": "num", "sched_dep_time": "num",
    "dep_delay": "num", "arr_time": "num", "sched_arr_time": "num", "arr_delay": "num",
    "carrier": "str", "flight": "num", "tailnum": "str", "origin": "str", "dest": "str",
    "air_time": "num", "distance": "num", "hour": "num", "minute": "num", "time_hour": "ts",
}
WEATHER_COLUMNS = {
    "origin": "str", "year": "num", "month": "num", "day": "num", "hour": "num",
    "temp": "num", "dewp": "num", "humid": "num", "wind_dir": "num", "wind_speed": "num",
    "wind_gust": "num", "precip": "num", "pressure": "num", "visib": "num", "time_hour": "ts",
}
SCHEMAS = {"flights": FLIGHTS_COLUMNS, "weather": WEATHER_COLUMNS}

# Columns that identify a row: a null here makes the row unusable.
KEYS = {
    "flights": ["carrier", "flight", "origin", "dest", "time_hour", "minute", "distance"],
    "weather": ["origin", "time_hour"],
}
# Rows sharing these values are duplicates; the first one is kept.
UNIQUE = {
    "flights": ["carrier", "flight", "origin", "time_hour", "minute"],
    "weather": ["origin", "time_hour"],
}
# Inclusive plausible ranges; nulls are allowed outside the key columns.
RANGES = {
    "flights": {
        "month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59),
        "sched_dep_time": (0, 2359), "sched_arr_time": (0, 2359),
        "dep_time": (1, 2400), "arr_time": (1, 2400),
        "dep_delay": (-120, 1800), "arr_delay": (-120, 1800),
        "flight": (1, 9999), "air_time": (10, 800), "distance": (10, 6000),
    },
    "weather": {
        "month": (1, 12), "day": (1, 31), "hour": (0, 23),
        "temp": (-40, 130), "dewp": (-60, 100), "humid": (0, 100), "wind_dir": (0, 360),
        "wind_speed": (0, 200), "wind_gust": (0, 250), "precip": (0, 10),
        "pressure": (900, 1100), "visib": (0, 100),
    },
}
PATTERNS = {
    "flights": {"carrier": r"^[A-Z0-9]{2}$", "origin": r"^[A-Z]{3}$", "dest": r"^[A-Z]{3}$"},
    "weather": {"origin": r"^[A-Z]{3}$"},
}
READERS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass
class ValidationResult:
    name: str
    rows_in: int = 0
    kind: str | None = None
    accepted: pd.DataFrame | None = None
    rejected: pd.DataFrame | None = None  # the input rows plus a `reason` column
    file_error: str | None = None  # set when the whole file is rejected
    details: dict = field(default_factory=dict)

    @property
    def rows_accepted(self) -> int:
        return 0 if self.accepted is None else len(self.accepted)

    @property
    def rows_rejected(self) -> int:
        if self.file_error:
            return self.rows_in
        return 0 if self.rejected is None else len(self.rejected)


def file_format(name: str) -> str | None:
    lowered = name.lower()
    for suffix, fmt in READERS.items():
        if lowered.endswith(suffix):
            return fmt
    return None


def parse_landing_file(name: str, data: bytes) -> pd.DataFrame:
    """A landing file's bytes as a DataFrame, read as parquet or CSV by its name's suffix."""
    fmt = file_format(name)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pandas()
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data), na_values=["NA", ""], keep_default_na=True, low_memory=False)
    raise ValueError(f"unsupported file type {name!r}: expected one of {sorted(READERS)}")


def detect_kind(columns) -> tuple[str | None, str | None]:
    """The kind whose columns the file has, or a reason naming what is missing."""
    cols = set(columns)
    for kind, schema in SCHEMAS.items():
        if set(schema) <= cols:
            return kind, None
    # The kind with the largest share of its columns present (a flights file with two columns
    # named no kind's "closest" by the count of missing columns: weather has fewer of them).
    closest = max(SCHEMAS, key=lambda k: len(set(SCHEMAS[k]) & cols) / len(SCHEMAS[k]))
    missing = sorted(set(SCHEMAS[closest]) - cols)
    return None, f"schema: columns match no known kind; closest is {closest}, missing {missing}"


def _to_utc(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        ts = series if getattr(series.dt, "tz", None) is not None else series.dt.tz_localize("UTC")
        return ts.dt.tz_convert("UTC")
    return pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")


def validate(name: str, data: bytes, now: datetime | None = None) -> ValidationResult:
    """Validate one file's bytes. Never raises for bad content: it reports it."""
    try:
        raw = parse_landing_file(name, data)
    except Exception as exc:  # any reader error means the file is unreadable
        return ValidationResult(name=name, file_error=f"unreadable: {type(exc).__name__}: {exc}")
    return validate_frame(name, raw, now)


def validate_frame(name: str, raw: pd.DataFrame, now: datetime | None = None) -> ValidationResult:
    """Validate the rows of a landing file, or of a feed batch of the same kind (`features.feeds`)."""
    result = ValidationResult(name=name)
    result.rows_in = len(raw)
    kind, problem = detect_kind(raw.columns)
    if kind is None:
        result.file_error = problem
        return result
    result.kind = kind
    if raw.empty:
        result.file_error = "empty: the file has the right columns but no rows"
        return result

    schema = SCHEMAS[kind]
    df = raw[list(schema)].copy()
    reasons = pd.Series([[] for _ in range(len(df))], index=df.index, dtype=object)

    def flag(mask: pd.Series, text) -> None:
        for idx in mask[mask].index:
            reasons[idx].append(text(idx) if callable(text) else text)

    for col, typ in schema.items():
        present = raw[col].notna()
        if typ == "num":
            df[col] = pd.to_numeric(raw[col], errors="coerce").astype("float64")
        elif typ == "ts":
            df[col] = _to_utc(raw[col]).astype("datetime64[us, UTC]")
        else:
            df[col] = raw[col].astype("string").str.strip()
        bad_type = present & df[col].isna()
        flag(bad_type, lambda i, c=col, t=typ: f"type: {c}={raw.at[i, c]!r} is not a valid {t}")

    for col in KEYS[kind]:
        flag(raw[col].isna(), f"null: key column {col} is empty")

    for col, (lo, hi) in RANGES[kind].items():
        out = df[col].notna() & ((df[col] < lo) | (df[col] > hi))
        flag(out, lambda i, c=col, lo=lo, hi=hi: f"range: {c}={df.at[i, c]:g} outside [{lo}, {hi}]")

    for col, pattern in PATTERNS[kind].items():
        bad = df[col].notna() & ~df[col].str.match(pattern).fillna(False).astype(bool)
        flag(bad, lambda i, c=col: f"format: {c}={df.at[i, c]!r} does not look like a code")

    now = now or datetime.now(timezone.utc)
    flag(df["time_hour"] > pd.Timestamp(now), lambda i: f"future: time_hour {df.at[i, 'time_hour']} is after now")

    key_ok = df[UNIQUE[kind]].notna().all(axis=1)
    dup = key_ok & df.duplicated(UNIQUE[kind], keep="first")
    flag(dup, f"duplicate: same {'+'.join(UNIQUE[kind])} as an earlier row")

    bad = reasons.map(bool)
    result.accepted = df[~bad].reset_index(drop=True)
    rejected = raw[bad].copy()
    rejected["reason"] = reasons[bad].map("; ".join)
    result.rejected = rejected.reset_index(drop=True)
    result.details = {"reason_counts": _count_reasons(reasons[bad])}
    return result


def _count_reasons(reasons: pd.Series) -> dict[str, int]:
    counts: dict[str, int] = {}
    for items in reasons:
        for item in items:
            key = item.split("=", 1)[0].split(" is ", 1)[0]
            counts[key] = counts.get(key, 0) + 1
    return counts
