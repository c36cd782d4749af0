"""Estimators for the shadow tests, importable by the shadow worker's process (it unpickles them)."""

from __future__ import annotations

import time


class Slow:
    """The wrapped estimator, 0.3 s slower per predict."""

    def __init__(self, estimator):
        self.estimator = estimator

    def predict_proba(self, x):
        time.sleep(0.3)
        return self.estimator.predict_proba(x)
