"""What the model server does, without HTTP: predict, reload, and the background poll.

The model in service is one immutable `LoadedModel` held in a single attribute.
A request reads that attribute once and uses that model to the end, and a reload
loads and checks the new version off the request path, then replaces the attribute
in one assignment: the swap is atomic, and a version that fails to load is never
swapped in. Reloads come from the admin endpoint and from a poll of the
`production` alias every `model_poll_seconds` (the fallback when no one calls the
endpoint). The same poll refreshes the Feast read plan.

Rollout (`serving.rollout` judges it, the serving DAG drives it through the admin
endpoints): a second slot holds a candidate version beside production, in one of
two modes.
- shadow: each request is answered by production as before; after the answer is
  built, the request's model input is put on a bounded queue (`put_nowait`: when the
  queue is full the rows are dropped and counted, a response never waits) that a
  separate, niced process reads (`serving.shadow_worker`, one per shadow candidate):
  it scores the requests that arrived within its linger in one batch with the
  candidate, and with production beside it for the latency judge, then logs the
  candidate's rows (`role=shadow`) itself. Nothing of the shadow reaches a response,
  and it never holds the server's GIL. Removing or promoting the candidate stops its
  process (what is queued is scored and written first), and so does `stop()`.
- canary: the flights whose stable hash (`in_canary`) falls below the share are
  answered by the candidate, the others by production; each answer names its
  version. A candidate that raises is counted as an error and production answers.
Promotion is the registry's: once `production` points at the candidate, a reload
takes the candidate's loaded model (no second download) and empties the slot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from datetime import datetime, timezone

import numpy as np

import model_registry
import settings
from features.compute import MODEL_FEATURES
from serving.frame import flight_id, model_input
from serving.inference_log import (
    AS_OF, CANARY, MAIN, MODEL_MS, PREDICTION, PROBABILITY, ROLE, SHADOW, InferenceLog, freshness,
)
from serving.model import LoadedModel, LoadFailed, load_version
from serving.online import OnlineFeatures
from serving.schemas import FlightRequest, Prediction, ReloadResult
from serving.shadow_worker import ShadowWorker, request_keys

log = logging.getLogger(__name__)

RETRY_FAILED_SECONDS = 600.0


class NotReady(RuntimeError):
    """The server cannot answer predictions yet; the message says why (HTTP 503)."""


class RolloutConflict(RuntimeError):
    """A rollout request that does not fit the server's state (HTTP 409); nothing was changed."""


MODES = (SHADOW, CANARY)


def in_canary(flight: str, share: float) -> bool:
    """True when the flight is in the canary share: a stable hash, so a flight always meets the same version."""
    if share <= 0:
        return False
    bucket = int.from_bytes(hashlib.blake2b(flight.encode(), digest_size=8).digest(), "big") / 2.0 ** 64
    return bucket < share


@dataclasses.dataclass
class RolloutCounts:
    """What happened since the candidate entered its mode (a new mode starts new counts)."""

    since: str = dataclasses.field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    main_answered: int = 0  # rows production answered
    canary_answered: int = 0
    canary_errors: int = 0  # canary rows the candidate failed on (production answered them)
    shadow_scored: int = 0
    shadow_dropped: int = 0  # rows not shadowed because the queue was full
    shadow_errors: int = 0


@dataclasses.dataclass(frozen=True)
class Candidate:
    model: LoadedModel
    mode: str  # shadow | canary
    share: float  # of flights answered by the candidate in canary mode
    counts: RolloutCounts
    shadow: ShadowWorker | None = None  # the process scoring it, in shadow mode


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
        self.candidate: Candidate | None = None
        self._retiring: list[threading.Thread] = []  # shadow workers being stopped
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
        with self._reload_lock:
            self._retire(self.candidate)  # what the shadow has queued is scored and written first
            retiring, self._retiring = self._retiring, []
        for thread in retiring:
            thread.join()
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
            candidate = self.candidate
            if candidate is not None and candidate.model.version == target:
                # promoted: the candidate's loaded and checked model serves everything from now on
                model = dataclasses.replace(candidate.model, alias=model_registry.PRODUCTION,
                                            loaded_at=datetime.now(timezone.utc))
                self.model, self.candidate = model, None
                self._retire(candidate)
                self.last_reload_error, self._failed = None, None
                log.info("promoted candidate %s to production (was %s)", target, old_version)
                return ReloadResult(model_name=name, version=target, previous_version=old_version, changed=True)
            try:
                model = load_version(self.cfg.mlflow_tracking_uri, name, target)
            except LoadFailed as exc:
                self.last_reload_error, self._failed = str(exc), (target, time.monotonic())
                raise
            self.model = model
            self._shadow_beside(model)
            self.last_reload_error, self._failed = None, None
            log.info("now serving %s version %s (was %s)", name, target, old_version)
            return ReloadResult(model_name=name, version=target, previous_version=old_version, changed=True)

    def _recently_failed(self, version: str | None) -> bool:
        """The poll does not re-download a version that just failed; the admin endpoint always tries."""
        return self._failed is not None and self._failed[0] == version \
            and time.monotonic() - self._failed[1] < RETRY_FAILED_SECONDS

    # -- rollout --------------------------------------------------------------------
    def set_candidate(self, version: str, mode: str, share: float | None = None) -> dict:
        """Load `version` beside production (or keep it, if it is the candidate already) in `mode`.

        Raises RolloutConflict (nothing changed) when there is no production model or the
        version is production's; LoadFailed when it cannot serve.
        """
        if mode not in MODES:
            raise RolloutConflict(f"mode must be one of {MODES}, not {mode!r}")
        share = self.cfg.canary_share if share is None else float(share)
        if not 0.0 < share <= 1.0:
            raise RolloutConflict(f"the canary share must be in (0, 1], not {share}")
        with self._reload_lock:
            production = self.model
            if production is None:
                raise RolloutConflict("no production model is loaded: a candidate needs one beside it")
            if production.version == str(version):
                raise RolloutConflict(f"version {version} is production already")
            current = self.candidate
            if current is not None and current.model.version == str(version):
                model = current.model
            else:
                model = load_version(self.cfg.mlflow_tracking_uri, self.cfg.model_name, str(version),
                                     alias=model_registry.CANDIDATE)
            counts = RolloutCounts()
            shadow = self._start_shadow(model, production, counts) if mode == SHADOW else None  # LoadFailed
            self.candidate = Candidate(model, mode, share, counts, shadow)
            self._retire(current)
            log.info("candidate %s in %s mode beside production %s (share %.3f)", version, mode,
                     production.version, share)
        return self.rollout_state()

    def clear_candidate(self) -> dict:
        """Empty the candidate slot: production answers everything again. Returns the state before."""
        with self._reload_lock:
            before = self.rollout_state()
            current, self.candidate = self.candidate, None
            self._retire(current)
        if before["candidate_version"]:
            log.warning("candidate %s removed (%s mode)", before["candidate_version"], before["mode"])
        return before

    def promote_candidate(self, version: str) -> ReloadResult:
        """Serve the candidate to everyone; `production` must point at it already (the registry decides)."""
        candidate = self.candidate
        if candidate is None or candidate.model.version != str(version):
            raise RolloutConflict(f"version {version} is not the candidate "
                                  f"({candidate.model.version if candidate else 'there is none'})")
        target = model_registry.production_version(self.cfg.mlflow_tracking_uri, self.cfg.model_name)
        if target != str(version):
            raise RolloutConflict(f"the production alias points to {target}, not {version}: move it first")
        return self.reload()

    def _start_shadow(self, model: LoadedModel, production: LoadedModel | None,
                      counts: RolloutCounts) -> ShadowWorker:
        """The process that scores `model` as a shadow beside `production`, started. Raises LoadFailed."""
        return ShadowWorker(model, production, counts, self.inference_log.store, self.cfg.inference_flush_rows,
                            self.cfg.inference_flush_seconds, self.cfg.shadow_queue_size,
                            sched_idle=self.cfg.shadow_sched_idle).start()

    def _shadow_beside(self, production: LoadedModel) -> None:
        """Production changed under a shadow (not by promotion): its worker is restarted to time the new one."""
        candidate = self.candidate
        if candidate is None or candidate.shadow is None:
            return
        try:
            shadow = self._start_shadow(candidate.model, production, candidate.counts)
        except LoadFailed:
            log.exception("the shadow of %s could not restart beside production %s: its rows count as errors",
                          candidate.model.version, production.version)
            shadow = None
        self.candidate = dataclasses.replace(candidate, shadow=shadow)
        self._retire(candidate)

    def _retire(self, candidate: Candidate | None) -> None:
        """Stop the candidate's shadow worker in the background (an admin request does not wait for it);
        `stop()` waits for every one of them."""
        if candidate is None or candidate.shadow is None:
            return
        thread = threading.Thread(target=candidate.shadow.stop, name=f"shadow-{candidate.model.version}-stop")
        thread.start()
        self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]

    def rollout_state(self) -> dict:
        candidate, production = self.candidate, self.model
        counts = dataclasses.asdict(candidate.counts) if candidate else None
        return {
            "production_version": production.version if production else None,
            "candidate_version": candidate.model.version if candidate else None,
            "mode": candidate.mode if candidate else None,
            "share": candidate.share if candidate and candidate.mode == CANARY else None,
            "counts": counts, "shadow_pending": candidate.shadow.pending if candidate and candidate.shadow else None,
        }

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
        model, online, candidate = self.model, self.online, self.candidate
        if model is None or online is None or not online.ready:
            raise NotReady(self.not_ready_reason() or "not ready")
        as_of = [r.as_of or received for r in requests]
        found = online.read([r.entity_row() for r in requests], as_of)
        frame = model_input(requests, found.values)
        if candidate is not None and candidate.mode == CANARY:
            return model, self._predict_canary(model, candidate, requests, frame, found, as_of, received, started)
        model_started = time.perf_counter()
        probabilities = model.probabilities(frame)
        model_ms = (time.perf_counter() - model_started) * 1000.0
        latency_ms = (time.perf_counter() - started) * 1000.0
        answers = [self._answer(model, r, float(p), u, stale)
                   for r, p, u, stale in zip(requests, probabilities, found.unknown, found.stale)]
        values = frame.to_numpy()
        self.inference_log.append(_log_rows(model, requests, answers, values.tolist(), found.stamps,
                                            as_of, received, latency_ms, MAIN, model_ms))
        if candidate is not None and candidate.mode == SHADOW:
            candidate.counts.main_answered += len(answers)
            if candidate.shadow is None:  # its worker could not start beside this production
                candidate.counts.shadow_errors += len(answers)
            else:  # a put_nowait: dropped and counted when the queue is full, never waited for
                candidate.shadow.submit(request_keys(requests, answers), values, found.stamps, as_of, received)
        return model, answers

    def _predict_canary(self, model: LoadedModel, candidate: Candidate, requests: list[FlightRequest], frame,
                        found, as_of: list[datetime], received: datetime, started: float) -> list[Prediction]:
        """Each flight answered by the version its hash picks; the candidate failing falls back to production."""
        ids = [flight_id(r.carrier, r.flight, r.origin, r.sched_dep_ts) for r in requests]
        in_share = np.array([in_canary(i, candidate.share) for i in ids])
        by = {}  # role -> (model, row positions, probabilities, model_ms)
        groups = [(CANARY, candidate.model, np.flatnonzero(in_share)), (MAIN, model, np.flatnonzero(~in_share))]
        for role, serving_model, rows in groups:
            if not len(rows):
                continue
            part = frame if len(rows) == len(frame) else frame.iloc[rows].reset_index(drop=True)
            model_started = time.perf_counter()
            try:
                probabilities = serving_model.probabilities(part)
            except Exception:
                if role != CANARY:
                    raise
                log.exception("canary %s failed on %d rows: production answers them", candidate.model.version,
                              len(rows))
                candidate.counts.canary_errors += len(rows)
                role, serving_model, probabilities = MAIN, model, model.probabilities(part)
            by.setdefault(role, []).append((serving_model, rows, probabilities,
                                            (time.perf_counter() - model_started) * 1000.0))
        latency_ms = (time.perf_counter() - started) * 1000.0
        answers: list = [None] * len(requests)
        features = frame.to_numpy().tolist()
        for role, parts in by.items():
            for serving_model, rows, probabilities, model_ms in parts:
                for i, p in zip(rows, probabilities):
                    answers[i] = self._answer(serving_model, requests[i], float(p), found.unknown[i], found.stale[i])
                self.inference_log.append(_log_rows(
                    serving_model, [requests[i] for i in rows], [answers[i] for i in rows],
                    [features[i] for i in rows], [found.stamps[i] for i in rows], [as_of[i] for i in rows],
                    received, latency_ms, role, model_ms))
                if role == CANARY:
                    candidate.counts.canary_answered += len(rows)
                else:
                    candidate.counts.main_answered += len(rows)
        return answers

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
              latency_ms: float, role: str = MAIN, model_ms: float | None = None) -> list[dict]:
    rows = []
    for request, answer, values, view_stamps, asked in zip(requests, answers, features, stamps, as_of):
        row = {
            "request_id": answer.request_id, "request_time": received, AS_OF: asked, "model_name": model.name,
            "model_version": model.version, "carrier": request.carrier, "flight": request.flight,
            "tailnum": request.tailnum, "origin": request.origin, "dest": request.dest, "route": request.route,
            "sched_dep_ts": request.sched_dep_ts, "flight_id": answer.flight_id,
            PROBABILITY: answer.probability, PREDICTION: answer.prediction, "latency_ms": latency_ms,
            ROLE: role, MODEL_MS: model_ms,
        }
        row.update(zip(MODEL_FEATURES, values))
        row.update(freshness(view_stamps, asked))
        rows.append(row)
    return rows
