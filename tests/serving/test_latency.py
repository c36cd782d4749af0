"""Validation judges latency side by side with production, so a busy machine does not reject a fast model.

Both versions are timed interleaved in one process on the same rows while other
processes and a thread keep the two cores busy. A copy of production passes; a
model five times slower fails; an absolute timing under the same load would have
failed the copy (it is measured here too, against the cap a quiet machine allows).
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

from features.names import MODEL_FEATURES
from serving.model import LoadedModel
from serving.validation import latency_problems, side_by_side_latency_ms


class FiveTimes:
    """An estimator that does its inner model's work five times per call (same answers, five times the cost)."""

    def __init__(self, inner):
        self.inner = inner

    def predict_proba(self, x):
        for _ in range(4):
            self.inner.predict_proba(x)
        return self.inner.predict_proba(x)


@pytest.fixture(scope="module")
def models():
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(4000, len(MODEL_FEATURES))), columns=MODEL_FEATURES)
    y = (x["temp"] + rng.normal(size=len(x)) > 0).astype(int)
    fitted = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x, y)
    production = LoadedModel("m", "1", "", 0.5, fitted)
    copy = LoadedModel("m", "2", "", 0.5, fitted)
    slow = LoadedModel("m", "3", "", 0.5, FiveTimes(fitted))
    return production, copy, slow, x.head(200)


@pytest.fixture
def busy_machine():
    """Both cores busy: two spinning processes and a spinning thread in this process."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(10_000))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()
    for p in procs:
        p.kill()
        p.wait()


def test_as_fast_as_production_passes_and_five_times_slower_fails_under_load(models, busy_machine):
    production, copy, slow, rows = models

    copy_latency, production_latency = side_by_side_latency_ms([copy, production], rows, rows=600)
    assert latency_problems(copy_latency, production_latency, ratio=1.5, cap_ms=250) == []

    slow_latency, production_latency = side_by_side_latency_ms([slow, production], rows, rows=600)
    problems = latency_problems(slow_latency, production_latency, ratio=1.5, cap_ms=250)
    assert any("x production's" in p for p in problems), (slow_latency, production_latency)


def test_with_no_production_version_the_cap_alone_judges():
    assert latency_problems({"p50_ms": 1.0, "p99_ms": 9.0}, None, ratio=1.5, cap_ms=10) == []
    [problem] = latency_problems({"p50_ms": 1.0, "p99_ms": 11.0}, None, ratio=1.5, cap_ms=10)
    assert problem == "single-row p99 latency 11.0 ms > budget 10 ms"
