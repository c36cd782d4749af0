"""Loading checks that need no registry: thresholds, sanity predictions, array input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import MODEL_FEATURES
from serving.model import LoadedModel, LoadFailed, check_probabilities, sanity_frame, takes_arrays, threshold_of


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, len(MODEL_FEATURES))), columns=MODEL_FEATURES)
    frame.iloc[::7, 3] = np.nan
    return frame, (frame["distance"] + rng.normal(size=300) > 0).astype(int).to_numpy()


def test_a_model_fitted_on_the_model_frame_takes_arrays_with_identical_answers(data):
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame, y = data
    estimator = HistGradientBoostingClassifier(max_iter=10).fit(frame, y)
    assert takes_arrays(estimator, sanity_frame())
    as_array = LoadedModel("m", "1", "", 0.5, estimator, array_input=True).probabilities(frame)
    assert np.array_equal(as_array, estimator.predict_proba(frame)[:, 1])


def test_models_that_need_the_frame_get_the_frame(data):
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline

    frame, y = data
    by_name = make_pipeline(make_column_transformer(("passthrough", ["distance", "temp"])),
                            HistGradientBoostingClassifier(max_iter=5)).fit(frame, y)
    reordered = HistGradientBoostingClassifier(max_iter=5).fit(frame[MODEL_FEATURES[::-1]], y)
    unnamed = HistGradientBoostingClassifier(max_iter=5).fit(frame.to_numpy(), y)
    assert not takes_arrays(by_name, sanity_frame())
    assert not takes_arrays(reordered, sanity_frame())
    assert not takes_arrays(unnamed, sanity_frame())


@pytest.mark.parametrize("tags, message", [
    ({}, "is None, not a number"), ({"decision_threshold": "high"}, "'high', not a number"),
    ({"decision_threshold": "1.5"}, "not in \\(0, 1\\)"),
])
def test_a_missing_or_unusable_threshold_refuses_the_version(tags, message):
    with pytest.raises(LoadFailed, match=message):
        threshold_of(tags)
    assert threshold_of({"decision_threshold": "0.35"}) == 0.35


def test_sanity_checks_reject_impossible_probabilities():
    check_probabilities(np.array([0.0, 1.0]), 2)
    with pytest.raises(LoadFailed, match="shape"):
        check_probabilities(np.array([0.5]), 2)
    with pytest.raises(LoadFailed, match="outside"):
        check_probabilities(np.array([0.5, np.nan]), 2)
    with pytest.raises(LoadFailed, match="outside"):
        check_probabilities(np.array([0.5, 1.2]), 2)
