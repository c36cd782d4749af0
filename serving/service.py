"""What the model server does, without HTTP: predict, reload, and the background poll.

The model in service is one immutable `LoadedModel` held in a single attribute.
A request reads that attribute once and uses that model to the end, and a reload
loads and checks the new version off the request path, then replaces the attribute
in one assignment: the swap is atomic, and a version that fails to load is never
swapped in. Reloads come from the admin endpoint and from a poll of the
`production` alias every `model_poll_seconds` (the fallback when no one calls the
endpoint). The same poll refreshes the Feast read plan.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timezone

import model_registry
import settings
from features.compute import MODEL_FEATURES
from serving.frame import flight_id, model_input
from serving.inference_log import AS_OF, PREDICTION, PROBABILITY, InferenceLog, freshness
from serving.model import LoadedModel, LoadFailed, load_version
from serving.online import OnlineFeatures
from serving.schemas import FlightRequest, Prediction, ReloadResult

log = logging.getLogger(__name__)

RETRY_FAILED_SECONDS = 600.0


class NotReady(RuntimeError):
    """The server cannot answer predictions yet; the message says why (HTTP 503)."""


class ModelService:
    def __init__(self, cfg: settings.Settings, online: OnlineFeatures | None = None,
                 inference_log: InferenceLog | None = None):
        self.cfg = cfg
        self.model: LoadedModel | None = None
        self.online = online
        self.inference_log = inference_log or InferenceLog(cfg.inference_flush_rows, cfg.inference_flush_seconds)
        self.last_reload_error: str | None = None
        self.features_error: str | None = None
        self._failed: tuple[str, float] | None = None  # (version, monotonic time) of the last failed load
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.inference_log.start()
        self._poller = threading.Thread(target=self._poll_loop, name="model-poll", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=60)
        self.inference_log.close()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.refresh_features()
            try:
                self.reload(from_poll=True)
            except LoadFailed as exc:
                log.warning("poll: %s; still serving %s", exc, self.model.version if self.model else "nothing")
            except Exception as exc:  # MLflow unreachable and the like: try again next poll
                log.warning("poll: cannot check the production alias: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.cfg.model_poll_seconds)

    def refresh_features(self) -> None:
        try:
            if self.online is None:
                self.online = OnlineFeatures()
            self.online.refresh()
            self.features_error = None
        except Exception as exc:
            self.features_error = f"online features unavailable: {type(exc).__name__}: {exc}"
            log.warning(self.features_error)

    # -- reload ---------------------------------------------------------------------
    def reload(self, from_poll: bool = False) -> ReloadResult:
        """Serve whatever the `production` alias points to now. Raises LoadFailed, keeping the old model."""
        name = self.cfg.model_name
        with self._reload_lock:
            current = self.model
            old_version = current.version if current else None
            target = model_registry.production_version(self.cfg.mlflow_tracking_uri, name)
            if target == old_version or (from_poll and self._recently_failed(target)):
                return ReloadResult(model_name=name, version=old_version, previous_version=old_version, changed=False)
            if target is None:
                log.warning("%s has no production alias: unloading version %s", name, old_version)
                self.model = None
                return ReloadResult(model_name=name, version=None, previous_version=old_version, changed=True)
            try:
                model = load_version(self.cfg.mlflow_tracking_uri, name, target)
            except LoadFailed as exc:
                self.last_reload_error, self._failed = str(exc), (target, time.monotonic())
                raise
            self.model = model
            self.last_reload_error, self._failed = None, None
            log.info("now serving %s version %s (was %s)", name, target, old_version)
            return ReloadResult(model_name=name, version=target, previous_version=old_version, changed=True)

    def _recently_failed(self, version: str | None) -> bool:
        """The poll does not re-download a version that just failed; the admin endpoint always tries."""
        return self._failed is not None and self._failed[0] == version \
            and time.monotonic() - self._failed[1] < RETRY_FAILED_SECONDS

    # -- predict --------------------------------------------------------------------
    def not_ready_reason(self) -> str | None:
        if self.model is None:
            why = f"; last load error: {self.last_reload_error}" if self.last_reload_error else ""
            return f"no production model loaded for {self.cfg.model_name!r}{why}"
        if self.online is None or not self.online.ready:
            return self.features_error or "online features not resolved yet"
        return None

    def predict(self, requests: list[FlightRequest]) -> tuple[LoadedModel, list[Prediction]]:
        """Predict for every request with one model; log each answer."""
        started, received = time.perf_counter(), datetime.now(timezone.utc)
        model, online = self.model, self.online
        if model is None or online is None or not online.ready:
            raise NotReady(self.not_ready_reason() or "not ready")
        as_of = [r.as_of or received for r in requests]
        found = online.read([r.entity_row() for r in requests], as_of)
        frame = model_input(requests, found.values)
        probabilities = model.probabilities(frame)
        latency_ms = (time.perf_counter() - started) * 1000.0
        answers = [self._answer(model, r, float(p), u, stale)
                   for r, p, u, stale in zip(requests, probabilities, found.unknown, found.stale)]
        self.inference_log.append(_log_rows(model, requests, answers, frame.to_numpy().tolist(), found.stamps,
                                            as_of, received, latency_ms))
        return model, answers

    @staticmethod
    def _answer(model: LoadedModel, request: FlightRequest, probability: float, unknown: list[str],
                stale: list[str]) -> Prediction:
        late = probability >= model.threshold
        return Prediction(
            request_id=request.request_id or uuid.uuid4().hex,
            flight_id=flight_id(request.carrier, request.flight, request.origin, request.sched_dep_ts),
            probability=probability, prediction=int(late), decision="late" if late else "on_time",
            threshold=model.threshold, model_name=model.name, model_version=model.version, unknown_entities=unknown,
            stale_views=stale,
        )


def _log_rows(model: LoadedModel, requests: list[FlightRequest], answers: list[Prediction],
              features: list[list[float]], stamps: list[dict], as_of: list[datetime], received: datetime,
              latency_ms: float) -> list[dict]:
    rows = []
    for request, answer, values, view_stamps, asked in zip(requests, answers, features, stamps, as_of):
        row = {
            "request_id": answer.request_id, "request_time": received, AS_OF: asked, "model_name": model.name,
            "model_version": model.version, "carrier": request.carrier, "flight": request.flight,
            "tailnum": request.tailnum, "origin": request.origin, "dest": request.dest, "route": request.route,
            "sched_dep_ts": request.sched_dep_ts, "flight_id": answer.flight_id,
            PROBABILITY: answer.probability, PREDICTION: answer.prediction, "latency_ms": latency_ms,
        }
        row.update(zip(MODEL_FEATURES, values))
        row.update(freshness(view_stamps, asked))
        rows.append(row)
    return rows
