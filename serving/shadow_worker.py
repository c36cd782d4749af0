"""The shadow, scored in a separate process: it never holds the server's GIL, and runs niced.

A shadow scored in a thread of the server shared the GIL with the responses, which
put a request's p99 at 1.7x (docs/benchmarks.md, "A shadow beside production"), and
niceness cannot be given to a thread that holds the GIL. So the candidate is scored
by a child process (started with "spawn": the server has threads, and fork with
threads is unsafe), one per shadow candidate:

- `ShadowWorker.start()` (server side, off the request path: the admin endpoint's
  worker thread) starts the process with the candidate's and production's
  `LoadedModel`s (pickled once) and waits until it reports ready; a worker that does
  not start raises `LoadFailed`, and the candidate is not set.
- `submit()` (on the request path) puts small picklable data on a bounded
  `multiprocessing.Queue` with `put_nowait`: the request keys, the model input as an
  array, the feature timestamps, the as-of times. A full queue drops the rows and
  counts them (`shadow_dropped`); a response never waits for the shadow.
- The process (`_main`, niced by `SHADOW_NICENESS` and, on Linux, in the SCHED_IDLE
  class unless `sched_idle` is off (MLOPS_SHADOW_SCHED_IDLE), one OpenMP/BLAS thread) takes
  the requests that arrived within `SHADOW_LINGER_SECONDS` in one batch of at most
  `SHADOW_MAX_BATCH`, scores it with the candidate and times production on the same
  rows beside it (`baseline_ms`, for the latency judge), builds the log rows
  (`role=shadow`, the production row's `request_id`) and writes them with its own
  `InferenceLog` under the candidate's partition, so no row is built or written in
  the server. It reports only counts back, through a pipe that a server thread
  reads (`shadow_scored`, `shadow_errors`).
- `stop()` puts the end marker behind the queued requests: the process scores
  them, writes its log and exits. A process that dies otherwise (killed, crashed)
  counts every row it had not reported as a shadow error, and every row submitted
  after as one too; the server goes on answering.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import threading
import time
from datetime import datetime
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

# Light imports only: the worker process imports this module before it is niced; the heavy
# libraries (pandas, scikit-learn, through the models) are imported in `_main`, niced.
from features.names import MODEL_FEATURES
from serving.inference_log import AS_OF, BASELINE_MS, MODEL_MS, PREDICTION, PROBABILITY, ROLE, SHADOW, freshness

if TYPE_CHECKING:
    import numpy as np

    from serving.model import LoadedModel

log = logging.getLogger(__name__)

SHADOW_LINGER_SECONDS = 0.1  # the worker waits this long after a request to score the next ones with it
SHADOW_MAX_BATCH = 256  # requests per shadow predict call
SHADOW_NICENESS = 10  # responses win the cores over the shadow
START_TIMEOUT_SECONDS = 120.0  # to import the libraries and unpickle two models
STOP_TIMEOUT_SECONDS = 60.0
_CONTEXT = multiprocessing.get_context("spawn")


class ShadowWorker:
    """The server's handle on one shadow process: submit requests to it, read its counts, stop it."""

    def __init__(self, candidate: LoadedModel, production: LoadedModel | None, counts, store, flush_rows: int,
                 flush_seconds: float, queue_size: int, niceness: int = SHADOW_NICENESS, sched_idle: bool = True):
        self.version = candidate.version
        self.counts = counts  # serving.service.RolloutCounts: shadow_scored, shadow_dropped, shadow_errors
        self._jobs = _CONTEXT.Queue(maxsize=max(1, queue_size))
        self._results, sender = _CONTEXT.Pipe(duplex=False)
        self.process = _CONTEXT.Process(
            target=_main, name=f"shadow-{candidate.version}", daemon=True,
            args=(self._jobs, sender, pickle.dumps((candidate, production), protocol=pickle.HIGHEST_PROTOCOL),
                  (store.root, store.s3_endpoint_url), flush_rows, flush_seconds, niceness,
                  sched_idle))
        self._sender = sender
        self._lock = threading.Lock()
        self._submitted = 0  # rows put on the queue
        self._reported = 0  # rows the process reported as scored or failed
        self._dead = False
        self._closing = False  # stop() was called: what is submitted from now on is not shadowed
        self._finished = False  # the process exited after writing its log
        self._reader: threading.Thread | None = None

    # -- lifecycle (off the request path) --------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> "ShadowWorker":
        """Start the process and wait until it has loaded the models. Raises LoadFailed."""
        from serving.model import LoadFailed

        started = time.monotonic()
        self.process.start()
        self._sender.close()  # the child holds the only writing end: its exit is an EOF here
        ready = wait([self._results, self.process.sentinel], timeout)
        message = None
        if self._results in ready:
            try:
                message = self._results.recv()
            except (EOFError, OSError):  # the process died before saying "ready": reported just below
                message = None
        if message is None or message[0] != "ready":
            self._kill()
            raise LoadFailed(f"the shadow worker of version {self.version} did not start within {timeout:.0f}s "
                             f"(exit code {self.process.exitcode})")
        log.info("shadow worker of version %s ready in %.1fs (pid %s)", self.version, time.monotonic() - started,
                 self.process.pid)
        self._reader = threading.Thread(target=self._read, name=f"shadow-{self.version}-counts", daemon=True)
        self._reader.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Score what is queued, write the log, end the process (killed if it takes longer than `timeout`)."""
        with self._lock:
            self._closing = True
        if not self._exited():
            try:
                self._jobs.put(None, timeout=timeout)  # behind the queued requests
            except queue.Full:  # the process takes nothing: the join below times out and kills it
                log.warning("the shadow worker of version %s takes no requests: stopping it", self.version)
        self.process.join(timeout)
        if self.process.is_alive():
            log.error("the shadow worker of version %s did not stop within %.0fs: killed", self.version, timeout)
            self._kill()
        if self._reader is not None:
            self._reader.join(timeout)
        self._jobs.cancel_join_thread()  # the consumer is gone: nothing left to feed it
        self._jobs.close()

    def _kill(self) -> None:
        self.process.kill()
        self.process.join(10)

    def _exited(self) -> bool:
        """Whether the process has ended, without reaping it: only `stop()` (one thread) joins the process,
        since two threads waiting for the same child race (one reaps it, the other sees it alive)."""
        return bool(wait([self.process.sentinel], 0))

    @property
    def alive(self) -> bool:
        return not self._dead and not self._exited()

    @property
    def finished(self) -> bool:
        """True once the process exited cleanly, its log written."""
        return self._finished

    @property
    def pending(self) -> int:
        """Rows handed to the process and not yet reported scored or failed (queued, or being scored).

        Counted here rather than asked of the queue: `Queue.qsize` does not work on every platform
        (macOS has no sem_getvalue). Once the process is gone, none: what it never reported is counted
        as errors."""
        with self._lock:
            return 0 if self._dead else self._submitted - self._reported

    # -- the request path -----------------------------------------------------------
    def submit(self, keys: list[tuple], values: np.ndarray, stamps: list[dict], as_of: list[datetime],
               received: datetime) -> None:
        """Hand the requests to the shadow, or count them as dropped (queue full) or failed (worker dead)."""
        rows = len(keys)
        with self._lock:
            if self._closing:  # a request that read the slot just before the candidate left it
                self.counts.shadow_dropped += rows
                return
            if self._dead:
                self.counts.shadow_errors += rows
                return
            try:
                self._jobs.put_nowait((keys, values, stamps, as_of, received))
            except queue.Full:
                self.counts.shadow_dropped += rows
                return
            self._submitted += rows

    # -- the counts thread ----------------------------------------------------------
    def _read(self) -> None:
        done = False
        while True:
            if not self._results.poll():
                ready = wait([self._results, self.process.sentinel])
                if self._results not in ready and not self._results.poll():
                    break  # exited, nothing left to read
            try:
                message = self._results.recv()
            except (EOFError, OSError):
                break
            if message[0] == "counts":
                _, scored, errors = message
                with self._lock:
                    self.counts.shadow_scored += scored
                    self.counts.shadow_errors += errors
                    self._reported += scored + errors
            elif message[0] == "done":
                done = True
        with self._lock:
            self._dead = True
            lost = self._submitted - self._reported
            if not done:
                self.counts.shadow_errors += lost
        if done:
            self._finished = True
        else:
            log.error("the shadow worker of version %s died: %d submitted rows counted as errors, and every row "
                      "from now on", self.version, lost)


def _main(jobs, results, models: bytes, store: tuple[str, str], flush_rows: int, flush_seconds: float,
          niceness: int, idle: bool) -> None:
    """The shadow process: score batches of requests, log them, report counts, until the end marker."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s shadow worker %(levelname)s %(message)s")
    # Lower priority is best effort: without it the shadow still scores, only less politely.
    try:
        os.nice(niceness)  # first: loading the libraries and the models is niced too
    except OSError as exc:
        log.warning("shadow worker: cannot lower its priority (nice %s): %s", niceness, exc)
    if idle:
        try:  # Linux: runs only on a core no normal task wants, and a waking request preempts it at once
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError) as exc:
            log.warning("shadow worker: no idle scheduling class here (%s): niced only", exc)
    candidate, production = pickle.loads(models)
    import storage
    from serving.inference_log import InferenceLog
    from serving.model import limit_thread_pools

    limit_thread_pools()  # predictions happen in this thread only
    inference_log = InferenceLog(flush_rows, flush_seconds, storage.Storage(*store))
    inference_log.start()
    results.send(("ready",))
    try:
        stopping = False
        while not stopping:
            job = jobs.get()
            if job is None:
                break
            time.sleep(SHADOW_LINGER_SECONDS)  # the requests arriving meanwhile share one predict call
            batch = [job]
            while len(batch) < SHADOW_MAX_BATCH:
                try:
                    more = jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            rows = sum(len(keys) for keys, *_ in batch)
            try:
                inference_log.append(score(batch, candidate, production))
                results.send(("counts", rows, 0))
            except Exception:  # counted; the worker goes on with the next batch
                log.exception("shadow %s failed on %d requests", candidate.version, rows)
                results.send(("counts", 0, rows))
    finally:
        inference_log.close()
    results.send(("done",))


def score(batch: list[tuple], candidate: LoadedModel, production: LoadedModel | None) -> list[dict]:
    """The log rows of a batch of shadowed requests: the candidate's predictions, with its time on the whole
    batch (`model_ms`) and production's on the same rows, timed beside it (`baseline_ms`)."""
    import numpy as np
    import pandas as pd

    values = np.vstack([job[1] for job in batch])
    frame = pd.DataFrame(values, columns=MODEL_FEATURES)
    baseline_ms = None
    if production is not None:
        started = time.perf_counter()
        production.probabilities(frame)
        baseline_ms = (time.perf_counter() - started) * 1000.0
    started = time.perf_counter()
    probabilities = candidate.probabilities(frame)
    model_ms = (time.perf_counter() - started) * 1000.0
    rows, at = [], 0
    for keys, job_values, stamps, as_of, received in batch:
        for key, features, view_stamps, asked in zip(keys, job_values.tolist(), stamps, as_of):
            rows.append(shadow_row(candidate, key, features, view_stamps, asked, received,
                                   float(probabilities[at]), model_ms, baseline_ms))
            at += 1
    return rows


def request_keys(requests: list, answers: list) -> list[tuple]:
    """What a shadow row needs of each request and production's answer to it (small, picklable)."""
    return [(a.request_id, a.flight_id, r.carrier, r.flight, r.tailnum, r.origin, r.dest, r.route, r.sched_dep_ts)
            for r, a in zip(requests, answers)]


def shadow_row(model: LoadedModel, key: tuple, features: list[float], stamps: dict, as_of: datetime,
               received: datetime, probability: float, model_ms: float, baseline_ms: float | None) -> dict:
    """One `role=shadow` row of the inference log (the columns of `serving.service._log_rows`)."""
    request_id, flight_id, carrier, flight, tailnum, origin, dest, route, sched_dep_ts = key
    row = {
        "request_id": request_id, "request_time": received, AS_OF: as_of, "model_name": model.name,
        "model_version": model.version, "carrier": carrier, "flight": flight, "tailnum": tailnum, "origin": origin,
        "dest": dest, "route": route, "sched_dep_ts": sched_dep_ts, "flight_id": flight_id,
        PROBABILITY: probability, PREDICTION: int(probability >= model.threshold), "latency_ms": model_ms,
        ROLE: SHADOW, MODEL_MS: model_ms, BASELINE_MS: baseline_ms,
    }
    row.update(zip(MODEL_FEATURES, features))
    row.update(freshness(stamps, as_of))
    return row
