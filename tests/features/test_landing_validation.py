"""Validation: every row is accepted or rejected with a reason; bad files are rejected whole."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pandas as pd
import pytest

from features import validation


@pytest.fixture(scope="module")
def flights(samples_dir) -> pd.DataFrame:
    return pd.read_parquet(samples_dir / "flights_2013-02.parquet").head(500).copy()


@pytest.fixture(scope="module")
def weather(samples_dir) -> pd.DataFrame:
    return pd.read_parquet(samples_dir / "weather_2013-02.parquet")


def parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def reasons(result) -> list[str]:
    return result.rejected["reason"].tolist()


def test_clean_month_is_accepted_whole(flights):
    result = validation.validate("f.parquet", parquet(flights))
    assert result.kind == "flights"
    assert (result.rows_in, result.rows_accepted, result.rows_rejected) == (500, 500, 0)
    assert str(result.accepted["time_hour"].dtype) == "datetime64[us, UTC]"


def test_kind_is_recognised_by_columns_not_name(weather):
    result = validation.validate("flights_2013-02.parquet", parquet(weather))
    assert result.kind == "weather"


def test_real_wind_speed_outlier_is_quarantined_with_reason(weather):
    result = validation.validate("w.parquet", parquet(weather))
    assert result.rows_rejected == 1
    assert result.rows_accepted + result.rows_rejected == result.rows_in == len(weather)
    assert reasons(result) == ["range: wind_speed=1048.36 outside [0, 200]"]


def test_truncated_parquet_is_rejected_whole(flights):
    data = parquet(flights)
    result = validation.validate("f.parquet", data[: len(data) // 2])
    assert result.file_error.startswith("unreadable:")
    assert result.accepted is None


def test_wrong_schema_names_missing_columns(flights):
    result = validation.validate("f.parquet", parquet(flights.drop(columns=["carrier", "dest"])))
    assert result.file_error.startswith("schema:")
    assert "carrier" in result.file_error and "dest" in result.file_error


def test_unsupported_file_type():
    result = validation.validate("notes.txt", b"hello")
    assert "unsupported file type" in result.file_error


def test_csv_with_bad_rows(flights):
    df = flights.head(6).copy()
    df["time_hour"] = df["time_hour"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    df = df.astype({"distance": object, "carrier": object})
    df.loc[0, "distance"] = "far"                      # type
    df.loc[1, "carrier"] = None                        # key null
    df.loc[2, "arr_delay"] = 99999                     # range
    df.loc[3, "time_hour"] = "2030-01-01T00:00:00Z"    # future
    df.loc[5] = df.loc[4]                              # duplicate of row 4
    result = validation.validate("f.csv", df.to_csv(index=False).encode(),
                                 now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert result.kind == "flights"
    assert result.rows_in == 6 and result.rows_accepted == 1 and result.rows_rejected == 5
    got = reasons(result)
    assert got[0].startswith("type: distance='far'")
    assert "null: key column carrier is empty" in got[1]
    assert got[2].startswith("range: arr_delay=99999")
    assert got[3].startswith("future: time_hour 2030-01-01")
    assert got[4].startswith("duplicate:")


def test_rows_are_always_accounted_for(flights):
    df = flights.copy()
    df.loc[df.index[::7], "origin"] = "not an airport"
    df.loc[df.index[::11], "dep_delay"] = -999
    result = validation.validate("f.parquet", parquet(df))
    assert result.rows_accepted + result.rows_rejected == result.rows_in == len(df)
    assert result.rows_rejected == len(set(df.index[::7]) | set(df.index[::11]))
    assert result.rejected["reason"].str.len().gt(0).all()


def test_empty_file_is_rejected(flights):
    result = validation.validate("f.parquet", parquet(flights.head(0)))
    assert result.file_error.startswith("empty")


def test_a_file_matching_no_kind_names_the_kind_it_resembles():
    from features.validation import detect_kind

    kind, reason = detect_kind(["carrier", "flight", "whatever"])
    assert kind is None and "closest is flights" in reason and "'dep_delay'" in reason
