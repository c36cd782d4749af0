"""A landing file's outcome is decided from its ledger record and validation alone, before any write."""

from __future__ import annotations

import pandas as pd
import pytest

from features import ingest
from features.validation import ValidationResult

SEEN = {"sha256": "s", "batch_id": "b1", "file": "weather.parquet", "at": "2026-01-01T00:00:00+00:00"}


def result(accepted: int, rejected: int, file_error: str | None = None) -> ValidationResult:
    return ValidationResult(
        name="weather.parquet", rows_in=accepted + rejected, kind="weather", file_error=file_error,
        accepted=None if file_error else pd.DataFrame({"x": range(accepted)}),
        rejected=None if file_error else pd.DataFrame({"x": range(rejected)}),
    )


@pytest.mark.parametrize(
    ("batch_id", "name", "seen", "expected"),
    [
        ("b1", "weather.parquet", None, False),  # never seen
        ("b1", "weather.parquet", SEEN, False),  # this very file on a retried attempt
        ("b2", "weather.parquet", SEEN, True),  # an earlier batch's content
        ("b1", "weather_copy.parquet", SEEN, True),  # the same content under another name
    ],
)
def test_duplicates_come_from_the_ledger(batch_id, name, seen, expected):
    assert ingest.is_duplicate(seen, batch_id, name) is expected


def test_a_duplicate_is_not_validated():
    outcome = ingest.decide("b2", "weather.parquet", SEEN, None)
    assert outcome.kind == ingest.DUPLICATE and outcome.seen is SEEN


@pytest.mark.parametrize(
    ("validated", "kind", "reason"),
    [
        ("Traceback ...\nRuntimeError: boom\n", ingest.PROCESSING_ERROR, "processing error:\nTraceback ..."),
        (result(0, 0, file_error="unreadable: ArrowInvalid"), ingest.QUARANTINED_WHOLE, "unreadable: ArrowInvalid"),
        (result(5, 0), ingest.ACCEPTED, None),
        (result(5, 2), ingest.ACCEPTED, None),
        (result(0, 7), ingest.NO_VALID_ROWS, None),
    ],
)
def test_each_validation_has_one_outcome(validated, kind, reason):
    outcome = ingest.decide("b1", "weather.parquet", SEEN, validated)
    assert outcome.kind == kind
    assert outcome.reason is None if reason is None else outcome.reason.startswith(reason)


def test_a_file_that_is_not_a_duplicate_must_be_validated():
    with pytest.raises(ValueError):
        ingest.decide("b1", "weather.parquet", None, None)
