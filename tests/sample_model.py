"""Small model versions logged per the model contract, for the serving tests and benchmark (test support).

Serving is built and tested without waiting for the training stage, so it needs
registered versions that look like training's: a scikit-learn estimator logged
with `mlflow.sklearn` (cloudpickle), fitted on `model_frame` of point-in-time
features, with the version tags and `test_*` run metrics of the model contract.
It also logs deliberately broken versions, which validation must reject.
Nothing here is used by the server or the DAG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

import model_registry
from features.compute import LABEL, MODEL_FEATURES, model_frame
from features.names import FEATURE_SERVICE
from model_registry import Tag
from training.dataset import labelled_flights_between, with_features
from training.metrics import scores

PIP_REQUIREMENTS = ["scikit-learn", "pandas", "numpy"]


@dataclass
class Split:
    train: pd.DataFrame  # model_frame columns plus the label
    test: pd.DataFrame
    train_range: tuple[str, str]
    test_range: tuple[str, str]


def split(test_days: int = 14, train_rows: int = 20_000, seed: int = 0) -> Split:
    """The newest `test_days` of labelled flights in the feature store as test, earlier ones as train."""
    flights = labelled_flights_between(pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
    cut = flights["event_timestamp"].max() - pd.Timedelta(days=test_days)
    train, test = flights[flights["event_timestamp"] <= cut], flights[flights["event_timestamp"] > cut]
    train = train.sample(min(train_rows, len(train)), random_state=seed)

    def frame(rows: pd.DataFrame) -> pd.DataFrame:
        joined = with_features(rows)
        return model_frame(joined).assign(**{LABEL: joined[LABEL].to_numpy()})

    def span(rows: pd.DataFrame) -> tuple[str, str]:
        return rows["event_timestamp"].min().isoformat(), rows["event_timestamp"].max().isoformat()

    return Split(frame(train), frame(test), span(train), span(test))


def fit(data: Split, max_iter: int = 60, seed: int = 0):
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1, random_state=seed)
    return model.fit(data.train[MODEL_FEATURES], data.train[LABEL])


def fit_skewed(data: Split, keep_late: float = 0.1, max_iter: int = 40, seed: int = 0):
    """A model trained on a skewed sample: only `keep_late` of the late flights kept.

    Its ranking is about as good as the others' (so its test ROC AUC matches what is
    logged and offline validation passes), but its probabilities are far lower: at the
    contract's decision threshold it calls almost every flight on time. Live traffic
    shows it (decisions disagree with production's, scores shifted, F1 on labels worse).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    late = data.train[data.train[LABEL] == 1].sample(frac=keep_late, random_state=seed)
    train = pd.concat([data.train[data.train[LABEL] == 0], late])
    model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1, random_state=seed)
    return model.fit(train[MODEL_FEATURES], train[LABEL])


def register(estimator, data: Split, name: str, tracking_uri: str, *, threshold: float = 0.3,
             alias: str | None = model_registry.CHALLENGER, metric_offset: float = 0.0,
             pyfunc_predict_fn: str = "predict", logged_metrics: dict | None = None) -> str:
    """Log `estimator` as a new version of `name` with the contract's tags and test metrics.

    `metric_offset` is added to the logged test_roc_auc, to make a version whose
    logged metrics disagree with what it really does.
    """
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"{name}-serving-tests")
    if logged_metrics is None:
        probabilities = estimator.predict_proba(data.test[MODEL_FEATURES])[:, 1]
        measured = scores(data.test[LABEL].to_numpy(), probabilities, threshold)
        logged_metrics = {f"{Tag.TEST_METRIC_PREFIX}{k}": v + (metric_offset if k == "roc_auc" else 0.0) for k, v in measured.items()}
    with mlflow.start_run():
        mlflow.log_metrics(logged_metrics)
        info = mlflow.sklearn.log_model(
            sk_model=estimator, name="model", serialization_format="cloudpickle", registered_model_name=name,
            pip_requirements=PIP_REQUIREMENTS, pyfunc_predict_fn=pyfunc_predict_fn,
        )
    version = str(info.registered_model_version)
    _tag(name, version, tracking_uri, data, threshold, alias)
    return version


def register_raising_pyfunc(data: Split, name: str, tracking_uri: str) -> str:
    """A version whose model is a pyfunc that raises: no sklearn flavour, cannot load for serving."""
    import mlflow
    import mlflow.pyfunc

    class Raises(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            raise RuntimeError("this model is broken on purpose")

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"{name}-serving-tests")
    with mlflow.start_run():
        mlflow.log_metrics({"test_roc_auc": 0.7})
        info = mlflow.pyfunc.log_model(name="model", python_model=Raises(), registered_model_name=name,
                                       pip_requirements=["mlflow"])
    version = str(info.registered_model_version)
    _tag(name, version, tracking_uri, data, 0.3, model_registry.CHALLENGER)
    return version


def wrong_feature_count(data: Split):
    """An sklearn model fitted on three columns: it loads, but cannot predict on the model frame."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    columns = MODEL_FEATURES[:3]
    return make_pipeline(SimpleImputer(), LogisticRegression()).fit(data.train[columns].to_numpy(), data.train[LABEL])


def _tag(name: str, version: str, tracking_uri: str, data: Split, threshold: float, alias: str | None) -> None:
    mlflow_client = model_registry.client(tracking_uri)
    tags = {
        Tag.DECISION_THRESHOLD: str(threshold), Tag.FEATURE_SERVICE: FEATURE_SERVICE, Tag.TRIGGER_REASON: "test",
        Tag.range_start("train"): data.train_range[0], Tag.range_end("train"): data.train_range[1],
        Tag.range_start("test"): data.test_range[0], Tag.range_end("test"): data.test_range[1],
        Tag.FEATURE_TABLE_EVENTS: json.dumps([]),
    }
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    if alias:
        model_registry.point_alias(mlflow_client, name, alias, version)
