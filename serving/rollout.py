"""Judging a candidate on live traffic: the shadow and canary verdicts, as plain functions.

The model server logs the rollout's rows (`serving.inference_log`: `role=shadow` and
`role=canary` under the candidate's partition, production's own rows where they always
are) and counts what it could not log (`GET /admin/rollout`: shadow drops and errors,
canary errors). The judge reads both and answers pass or fail with its reasons.

Shadow (the same requests, scored by both): paired by `request_id`,
- errors: the shadow's error share of the requests it was given, at most
  `rollout_max_error_rate` (drops are a capacity matter of the server, reported only);
- latency: the median request latency production's answers would have had with the
  candidate's model time instead of production's (both timed on the same shadow batches
  side by side, `model_ms` and `baseline_ms`), over production's, at most
  `serving_latency_ratio`; the
  median because the shadow's thread gives way to responses, so its tail measures
  contention, not the model (the canary, on the response path, compares p95 request
  latency);
- agreement: the share of requests where both decide the same, at least
  `rollout_min_agreement`;
- score shift: the PSI of the candidate's probabilities against production's (ten
  bins at production's deciles), at most `rollout_max_score_psi`; the mean shift is
  reported;
- quality: on the paired rows whose label has arrived (`monitoring.inference.attach_labels`),
  every metric of `training.metrics` (F1 of the decisions as made): the candidate fails on a
  metric where it is worse than production by more than `quality_drop_margin` and the 90%
  bootstrap interval of the difference lies below zero (a few hundred labelled rows move F1
  by several hundredths either way: a drop within that noise is a note, with its interval,
  not a reason). The bootstrap resamples whole hours of `as_of`, not rows: the flights of one
  hour share its weather and congestion, so a few hours' labelled rows are a few pieces of
  evidence, not hundreds (the demo's half-day of July rolled a retrained model back on F1
  0.195 vs 0.415, row interval [-0.30, -0.12], while on every flight of the same days the two
  were 0.524 vs 0.504, 0.592 vs 0.606, 0.490 vs 0.408: it was one afternoon's weather);
  judged from `rollout_min_labelled` labelled rows (fewer: reported as not judged).
Agreement and score shift say the candidate behaves differently from production, which a
retraining after drift is meant to do: they fail the candidate only when its quality
could not be judged on labels. When labels show it is not worse, they are kept as
`notes` in the verdict's numbers, not reasons.
Canary (different flights, split by a stable hash, so alike in distribution): errors,
the p95 request latency ratio, the score shift and the labelled quality of the
candidate's share against production's share over the same period.
No rows at all fails: a version is not promoted without live evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import settings
from serving.inference_log import AS_OF, BASELINE_MS, CANARY, MODEL_MS, PREDICTION, PROBABILITY, SHADOW

if TYPE_CHECKING:
    import pandas as pd

LATENCY_FLOOR_MS = 1.0
PSI_BINS = 10
INTERVAL_LEVEL = 0.9
INTERVAL_RESAMPLES = 200
# The bootstrap's unit: the hour of a row's `as_of` (flights of one hour share its weather and congestion).
CLUSTER_COLUMN, CLUSTER_UNIT = AS_OF, "h"


@dataclass
class Verdict:
    stage: str  # shadow | canary
    version: str
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed (empty when it passed)
    numbers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.passed:
            return f"{self.stage} of version {self.version} passed"
        return f"{self.stage} of version {self.version} failed: " + "; ".join(self.reasons)


# -- reading the log -------------------------------------------------------------------
def read_rows(version: str, role: str | None = None, since: datetime | None = None) -> "pd.DataFrame":
    """The log rows of `version` (its production traffic, or one rollout role's) requested at or after `since`."""
    import pandas as pd

    import storage
    from serving.inference_log import FILE_SUFFIX, version_url

    store = storage.get()
    urls = [f["url"] for f in store.list_files(version_url(version, store, role)) if f["url"].endswith(FILE_SUFFIX)
            and not f["url"].rsplit("/", 1)[-1].startswith((".", "_"))]
    if not urls:
        return pd.DataFrame()
    rows = pd.concat([store.read_parquet(u) for u in urls], ignore_index=True)
    if since is not None:
        rows = rows[pd.to_datetime(rows["request_time"], utc=True) >= pd.Timestamp(since)]
    return rows.reset_index(drop=True)


def recent_rows(version: str, role: str | None = None, at_least: int = 2000) -> "pd.DataFrame":
    """The newest log rows of `version`: whole files, newest first (names sort in write order), until
    `at_least` rows; fewer when the log holds fewer."""
    import pandas as pd

    import storage
    from serving.inference_log import FILE_SUFFIX, version_url

    store = storage.get()
    urls = sorted((f["url"] for f in store.list_files(version_url(version, store, role))
                   if f["url"].endswith(FILE_SUFFIX) and not f["url"].rsplit("/", 1)[-1].startswith((".", "_"))),
                  key=lambda u: u.rsplit("/", 1)[-1], reverse=True)
    parts, total = [], 0
    for url in urls:
        if total >= at_least:
            break
        parts.append(store.read_parquet(url))
        total += len(parts[-1])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def count_rows(version: str, role: str, since_epoch: float) -> int:
    """Rows of a rollout role in files written since `since_epoch`, from parquet footers (no pandas):
    what the waiting sensor polls."""
    import posixpath

    import storage
    from monitoring.inference import _modified, row_count
    from serving.inference_log import FILE_SUFFIX, version_url

    total, cache = 0, {}
    for info in storage.get().list_files(version_url(version, role=role)):
        name = posixpath.basename(info["url"])
        if name.startswith((".", "_")) or not name.endswith(FILE_SUFFIX):
            continue
        modified = _modified(info)
        if modified is not None and modified.timestamp() < since_epoch:
            continue
        total += row_count(info["url"], cache)
    return total


# -- the measures ----------------------------------------------------------------------
def psi(expected, actual, bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected` (bins at `expected`'s quantiles)."""
    import numpy as np

    expected, actual = np.asarray(expected, dtype="float64"), np.asarray(actual, dtype="float64")
    if not len(expected) or not len(actual):
        return float("nan")
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1) / len(expected)
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1) / len(actual)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def percentile(values, q: float) -> float:
    import numpy as np

    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    return float(np.percentile(values, q)) if len(values) else float("nan")


def latency_ratio(candidate_ms, production_ms, q: float = 95) -> float:
    return max(percentile(candidate_ms, q), LATENCY_FLOOR_MS) / max(percentile(production_ms, q), LATENCY_FLOOR_MS)


def quality(candidate: "pd.DataFrame", production: "pd.DataFrame", label: str) -> dict:
    """Each quality metric of both on their labelled rows: {metric: {candidate, production, improvement}}."""
    from training.metrics import METRICS, improvement, scores

    out = {}
    mine = scores(candidate[label], candidate[PROBABILITY], decisions=candidate[PREDICTION])
    theirs = scores(production[label], production[PROBABILITY], decisions=production[PREDICTION])
    for metric in METRICS:
        out[metric] = {"candidate": mine[metric], "production": theirs[metric],
                       "improvement": improvement(metric, mine[metric], theirs[metric])}
    return out


def clusters(rows: "pd.DataFrame") -> list:
    """The row positions of each cluster of `rows`: the rows whose `CLUSTER_COLUMN` falls in the same
    `CLUSTER_UNIT`; each row on its own without that column (and a row without a time is its own)."""
    import numpy as np
    import pandas as pd

    if CLUSTER_COLUMN not in rows:
        return [np.array([i]) for i in range(len(rows))]
    hours = pd.to_datetime(rows[CLUSTER_COLUMN], utc=True).dt.floor(CLUSTER_UNIT)
    codes, _ = pd.factorize(hours)  # NaT: -1
    codes = np.where(codes < 0, codes.max(initial=-1) + 1 + np.arange(len(codes)), codes)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(order) else []


def improvement_intervals(candidate: "pd.DataFrame", production: "pd.DataFrame", label: str, paired: bool,
                          resamples: int = INTERVAL_RESAMPLES, level: float = INTERVAL_LEVEL,
                          seed: int = 0) -> dict[str, tuple[float, float]]:
    """The `level` bootstrap interval of the candidate's improvement over production, per metric.

    Resamples clusters (`clusters`: the hours of `as_of`; rows when a frame has no `as_of`), each
    drawn whole. `paired` (the shadow: row i of both is the same request) draws the candidate's
    clusters once and takes the same rows of both; otherwise (the canary: different flights) each
    side's clusters are drawn on their own.
    """
    import numpy as np

    from training.metrics import METRICS, SingleClass, improvement, scores

    rng = np.random.default_rng(seed)
    sides = [(f[label].to_numpy(), f[PROBABILITY].to_numpy(), f[PREDICTION].to_numpy())
             for f in (candidate, production)]
    units = [clusters(candidate)] if paired else [clusters(candidate), clusters(production)]

    def draw(groups: list) -> "np.ndarray":
        if not groups:
            return np.array([], dtype="int64")
        return np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))])

    gains: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(resamples):
        first = draw(units[0])
        picks = (first, first) if paired else (first, draw(units[1]))
        try:
            mine, theirs = (scores(y[i], p[i], decisions=d[i]) for (y, p, d), i in zip(sides, picks))
        except SingleClass:
            continue
        for m in METRICS:
            gains[m].append(improvement(m, mine[m], theirs[m]))
    tail = (1 - level) / 2
    return {m: (float(np.quantile(g, tail)), float(np.quantile(g, 1 - tail))) for m, g in gains.items() if g}


def _error_rate(errors: int, done: int) -> float:
    return errors / (errors + done) if errors + done else 0.0


def _labelled(rows: "pd.DataFrame", label: str) -> "pd.DataFrame":
    return rows[rows[label].notna()] if label in rows else rows.iloc[0:0]


def _judge_quality(verdict: Verdict, candidate: "pd.DataFrame", production: "pd.DataFrame", label: str,
                   cfg: settings.Settings, paired: bool) -> bool:
    """Adds the quality reasons (and notes); True when quality was judged (enough labelled rows of both classes)."""
    from training.metrics import SingleClass

    n = min(len(candidate), len(production))
    verdict.numbers["labelled_rows"] = {"candidate": len(candidate), "production": len(production)}
    if n < cfg.rollout_min_labelled:
        verdict.numbers["quality"] = f"not judged: {n} labelled rows < {cfg.rollout_min_labelled}"
        return False
    try:
        measured = quality(candidate, production, label)
    except SingleClass as exc:
        verdict.numbers["quality"] = f"not judged: {exc}"
        return False
    intervals = improvement_intervals(candidate, production, label, paired)
    for metric, m in measured.items():
        m["interval"] = intervals.get(metric)
    verdict.numbers["quality"] = measured
    hours = f" in {len(clusters(candidate))} hours" if CLUSTER_COLUMN in candidate else ""
    for metric, m in measured.items():
        if m["improvement"] >= -cfg.quality_drop_margin:
            continue
        said = (f"{metric} on labelled live rows {m['candidate']:.4f} vs production's {m['production']:.4f} "
                f"(worse by more than {cfg.quality_drop_margin}")
        lo, hi = m["interval"] or (float("nan"), float("nan"))
        if hi < 0:
            verdict.reasons.append(f"{said}; {INTERVAL_LEVEL:.0%} interval of the difference [{lo:+.4f}, {hi:+.4f}])")
        else:
            verdict.numbers.setdefault("quality_notes", []).append(
                f"{said}, but within the noise of {n} labelled rows{hours}: {INTERVAL_LEVEL:.0%} interval of the "
                f"difference [{lo:+.4f}, {hi:+.4f}])")
    return True


def _weigh_differences(verdict: Verdict, differences: list[str], quality_judged: bool) -> None:
    """Differences from production fail the candidate unless labels judged it (then they are notes)."""
    if quality_judged:
        verdict.numbers["notes"] = differences
    else:
        verdict.reasons.extend(differences)


# -- the verdicts ----------------------------------------------------------------------
def judge_shadow(version: str, shadow: "pd.DataFrame", production: "pd.DataFrame", counts: dict,
                 cfg: settings.Settings | None = None, label: str | None = None) -> Verdict:
    """The shadow's rows against production's rows of the same requests (`label` column: labels attached)."""
    from features.names import LABEL

    cfg, label = cfg or settings.get(), label or LABEL
    verdict = Verdict(SHADOW, str(version), passed=False)
    paired = shadow.merge(production, on="request_id", suffixes=("", "_production")) \
        if len(shadow) and len(production) else shadow.iloc[0:0]
    errors = int(counts.get("shadow_errors", 0))
    verdict.numbers.update(rows=len(paired), shadow_rows=len(shadow), dropped=int(counts.get("shadow_dropped", 0)),
                           errors=errors)
    if paired.empty:
        verdict.reasons.append("no live request was shadowed: no evidence to judge")
        return verdict
    error_rate = _error_rate(errors, len(shadow))
    baseline = paired[BASELINE_MS] if BASELINE_MS in paired and paired[BASELINE_MS].notna().any() \
        else paired[f"{MODEL_MS}_production"]
    # What a response would have taken had the candidate answered: production's request latency with
    # its model time swapped for the candidate's. A model one millisecond slower in a 27 ms request is
    # not a regression (the demo's drift-retrained gradient boosting against a logistic regression was
    # 1.74x slower in model time alone).
    request_ms = paired["latency_ms_production"] if "latency_ms_production" in paired else None
    if request_ms is not None and request_ms.notna().any():
        ratio = latency_ratio(request_ms - baseline + paired[MODEL_MS], request_ms, q=50)
    else:
        ratio = latency_ratio(paired[MODEL_MS], baseline, q=50)
    agreement = float((paired[PREDICTION] == paired[f"{PREDICTION}_production"]).mean())
    shift = psi(paired[f"{PROBABILITY}_production"], paired[PROBABILITY])
    mean_shift = float(paired[PROBABILITY].mean() - paired[f"{PROBABILITY}_production"].mean())
    verdict.numbers.update(error_rate=error_rate, latency_ratio=ratio, agreement=agreement, score_psi=shift,
                           mean_score_shift=mean_shift)
    if not error_rate <= cfg.rollout_max_error_rate:
        verdict.reasons.append(f"error rate {error_rate:.4f} > {cfg.rollout_max_error_rate}")
    if not ratio <= cfg.serving_latency_ratio:
        verdict.reasons.append(f"median request latency with its model time {ratio:.2f}x production's "
                               f"> {cfg.serving_latency_ratio}x")
    differences = []
    if not agreement >= cfg.rollout_min_agreement:
        differences.append(f"decisions agree with production's on {agreement:.3f} of requests "
                           f"< {cfg.rollout_min_agreement}")
    if not shift <= cfg.rollout_max_score_psi:
        differences.append(f"score PSI against production {shift:.3f} > {cfg.rollout_max_score_psi} "
                           f"(mean shift {mean_shift:+.4f})")
    judged = False
    if label in paired:
        labelled = _labelled(paired, label)
        production_side = labelled[[f"{PROBABILITY}_production", f"{PREDICTION}_production", label]].rename(
            columns={f"{PROBABILITY}_production": PROBABILITY, f"{PREDICTION}_production": PREDICTION})
        judged = _judge_quality(verdict, labelled, production_side, label, cfg, paired=True)
    _weigh_differences(verdict, differences, judged)
    verdict.passed = not verdict.reasons
    return verdict


def judge_canary(version: str, canary: "pd.DataFrame", production: "pd.DataFrame", counts: dict,
                 cfg: settings.Settings | None = None, label: str | None = None) -> Verdict:
    """The candidate's share against production's share of the same period."""
    from features.names import LABEL

    cfg, label = cfg or settings.get(), label or LABEL
    verdict = Verdict(CANARY, str(version), passed=False)
    errors = int(counts.get("canary_errors", 0))
    verdict.numbers.update(rows=len(canary), production_rows=len(production), errors=errors)
    if canary.empty or production.empty:
        verdict.reasons.append(f"no live traffic to compare ({len(canary)} canary rows, "
                               f"{len(production)} production rows)")
        return verdict
    error_rate = _error_rate(errors, len(canary))
    ratio = latency_ratio(canary["latency_ms"], production["latency_ms"])
    shift = psi(production[PROBABILITY], canary[PROBABILITY])
    verdict.numbers.update(error_rate=error_rate, latency_ratio=ratio, score_psi=shift,
                           mean_score_shift=float(canary[PROBABILITY].mean() - production[PROBABILITY].mean()))
    if not error_rate <= cfg.rollout_max_error_rate:
        verdict.reasons.append(f"error rate {error_rate:.4f} > {cfg.rollout_max_error_rate}")
    if not ratio <= cfg.serving_latency_ratio:
        verdict.reasons.append(f"p95 request latency {ratio:.2f}x production's > {cfg.serving_latency_ratio}x")
    differences = []
    if not shift <= cfg.rollout_max_score_psi:
        differences.append(f"score PSI against production's share {shift:.3f} > {cfg.rollout_max_score_psi}")
    judged = False
    if label in canary and label in production:
        judged = _judge_quality(verdict, _labelled(canary, label), _labelled(production, label), label, cfg,
                                paired=False)
    _weigh_differences(verdict, differences, judged)
    verdict.passed = not verdict.reasons
    return verdict


# -- from the log ----------------------------------------------------------------------
def judge_from_log(stage: str, version: str, production_version: str, since: datetime, counts: dict,
                   cfg: settings.Settings | None = None, with_labels: bool = True) -> Verdict:
    """Read the stage's rows since `since` (and production's), attach labels, judge."""
    from monitoring.inference import attach_labels

    rows = read_rows(version, stage, since)
    production = read_rows(production_version, None, since)
    if with_labels:
        rows = attach_labels(rows) if len(rows) else rows
        production = attach_labels(production) if len(production) else production
    judge = judge_shadow if stage == SHADOW else judge_canary
    return judge(version, rows, production, counts, cfg)
