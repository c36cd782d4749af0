"""The serving DAG's task bodies as plain functions: choose, validate, promote, reload, smoke, publish,
roll back (`dags/serving.py` wires them).

Order of a deployment, and what a failure at each step leaves behind:
1. choose the newest version named by the triggering events (older ones are
   superseded); nothing to do when production already has it or a newer one;
2. validate it with no traffic (`serving.validation`): on failure production is
   untouched and the run fails with the reason;
2b. rollout on live traffic (`MLOPS_ROLLOUT=staged`, when a production version exists):
   the server loads it beside production as a shadow, the DAG waits in the triggerer
   for enough shadow rows or time, `serving.rollout` judges; then the same as a canary
   answering its share of flights; a failure removes the candidate (production never
   stopped serving everything else), tags the version and fails the run with the reason;
2c. with `MLOPS_PROMOTION_APPROVAL=required`, after a staged canary passed, a person
   approves (`serving.approval`, shown `approval_request`); a rejection or no answer in
   time fails the step (`approval_outcome`), and the rollback removes the candidate as in 2b;
3. promote: `production` -> the version, `previous` -> the old production, the
   deployment history tags (`serving.registry`) updated;
4. reload the server and wait (deferrable sensor) until GET /version reports it;
5. smoke-test the running server with a few real flights.
Any failure after the alias move (3-5, or publishing the event) rolls back:
`production` and `previous` return to where they were, the server reloads, and the
run fails naming the reason. Only a fully successful run emits `deployed_model`.
"""

from __future__ import annotations

import logging

import numpy as np

import datasets
import model_registry
import settings
from model_registry import Tag
from serving import registry
from serving.client import ServerClient, flight_table_body
from serving.failures import recorded_reasons

log = logging.getLogger(__name__)

SMOKE_FLIGHTS = 5


class DeployFailed(RuntimeError):
    """A step after validation failed; the message says what the server or registry did."""


# -- 1. choose ----------------------------------------------------------------------
def versions_named(extras: list[dict], conf_versions: list | None = None, model_name: str | None = None) -> list[str]:
    """Versions of `model_name` named by the events (and a manual run's conf), newest first, once each."""
    model_name = model_name or settings.get().model_name
    named = [str(e["version"]) for e in extras if e.get("version") and e.get("model_name", model_name) == model_name]
    named += [str(v) for v in conf_versions or []]
    ignored = [e for e in extras if e.get("model_name", model_name) != model_name]
    if ignored:
        log.warning("ignoring %d event(s) for other models: %s", len(ignored), ignored)
    return sorted(set(named), key=int, reverse=True)


def choose_version(extras: list[dict], conf_versions: list | None = None,
                   cfg: settings.Settings | None = None) -> tuple[str | None, str]:
    """(the version to deploy or None, why)."""
    cfg = cfg or settings.get()
    versions = versions_named(extras, conf_versions, cfg.model_name)
    if not versions:
        return None, "the triggering events name no version of " + cfg.model_name
    newest, superseded = versions[0], versions[1:]
    if superseded:
        log.info("version %s supersedes %s: only the newest is deployed", newest, superseded)
    production = model_registry.production_version(cfg.mlflow_tracking_uri, cfg.model_name)
    if production is not None and int(production) >= int(newest):
        return None, f"production already serves version {production} (newest named: {newest})"
    return newest, f"deploying version {newest}; production is {production}; superseded: {superseded or 'none'}"


# -- 2. validate ----------------------------------------------------------------------
def validate(version: str, cfg: settings.Settings | None = None) -> dict:
    """Every check of `serving.validation`; a failure says that production is unchanged."""
    from serving.validation import ValidationFailed, validate as run_checks

    cfg = cfg or settings.get()
    try:
        return run_checks(cfg.model_name, version, cfg)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{exc}. Production is unchanged. Measured: {exc.numbers}", exc.numbers) from exc


# -- 2b. rollout on live traffic --------------------------------------------------------
class RolloutFailed(RuntimeError):
    """The candidate did worse than production on live traffic (or could not be judged); says why."""


def start_stage(version: str, stage: str, previous: dict | None = None, cfg: settings.Settings | None = None) -> dict:
    """Put `version` beside production on the server in `stage` (shadow | canary) mode, or say why not.

    The rollout is direct (nothing to do) with `MLOPS_ROLLOUT=direct`, for a first
    deployment (no production version to compare with) and for a canary whose shadow
    was direct. Returns the stage's plan, which the waiting sensor and the judge read.
    """
    from serving.inference_log import SHADOW

    cfg = cfg or settings.get()
    uri, name = cfg.mlflow_tracking_uri, cfg.model_name
    production = model_registry.production_version(uri, name)
    plan = {"version": str(version), "stage": stage, "production_version": production, "staged": False}
    if cfg.rollout not in ("staged", "direct"):
        raise ValueError(f"MLOPS_ROLLOUT is {cfg.rollout!r}: staged or direct")
    why = ("MLOPS_ROLLOUT=direct" if cfg.rollout == "direct" else
           "first deployment: no production version to compare with" if production is None else
           f"the shadow was not staged ({previous.get('why')})" if previous is not None and not previous["staged"]
           else None)
    if why:
        log.info("%s of version %s skipped: %s", stage, version, why)
        return {**plan, "why": why}
    shadow = stage == SHADOW
    started = model_registry.now_iso()
    server = ServerClient(cfg.model_server_url)
    try:
        state = server.set_candidate(version, stage, None if shadow else cfg.canary_share)
    finally:
        server.close()
    if shadow:
        model_registry.point_alias(model_registry.client(uri), name, model_registry.CANDIDATE, version)
    from datetime import datetime

    plan.update(staged=True, why=f"{stage} beside production {production}", since=started,
                since_epoch=datetime.fromisoformat(started).timestamp(), share=state.get("share"),
                min_rows=cfg.shadow_min_rows if shadow else cfg.canary_min_rows,
                max_minutes=cfg.shadow_max_minutes if shadow else cfg.canary_max_minutes)
    log.info("version %s is in %s beside production %s", version, stage, production)
    return plan


def judge_stage(plan: dict, cfg: settings.Settings | None = None) -> dict:
    """Judge the stage on the rows logged since it started; raises RolloutFailed with the reasons."""
    from datetime import datetime

    from serving import rollout

    cfg = cfg or settings.get()
    if not plan["staged"]:
        return {**plan, "passed": True, "verdict": f"not judged: {plan['why']}"}
    version, stage = plan["version"], plan["stage"]
    server = ServerClient(cfg.model_server_url)
    try:
        state = server.rollout_state()
    finally:
        server.close()
    if state["candidate_version"] != version or state["mode"] != stage:
        raise RolloutFailed(f"the server's candidate is {state['candidate_version']} in {state['mode']} mode, "
                            f"not {version} in {stage} (was it restarted?): the {stage} cannot be judged")
    verdict = rollout.judge_from_log(stage, version, plan["production_version"],
                                     datetime.fromisoformat(plan["since"]), state["counts"] or {}, cfg)
    numbers = _finite(verdict.numbers)
    log.info("%s: %s", verdict.summary(), numbers)
    if not verdict.passed:
        raise RolloutFailed(f"{verdict.summary()}. Measured: {numbers}")
    return {**plan, "passed": True, "verdict": verdict.summary(), "numbers": numbers, "server_counts": state["counts"]}


def abort_rollout(plan: dict, reason: str, cfg: settings.Settings | None = None) -> str:
    """Remove the candidate from the server and the registry, tag why; production was never moved."""
    cfg = cfg or settings.get()
    uri, name, version = cfg.mlflow_tracking_uri, cfg.model_name, plan["version"]
    server = ServerClient(cfg.model_server_url)
    try:
        removed = server.clear_candidate()
    except Exception as exc:  # the server restarted (no candidate) or is down: it serves production either way
        log.error("could not remove the candidate from the server: %s", exc)
        removed = {"candidate_version": None}
    finally:
        server.close()
    mlflow_client = model_registry.client(uri)
    if model_registry.alias_version(uri, name, model_registry.CANDIDATE) == str(version):
        model_registry.point_alias(mlflow_client, name, model_registry.CANDIDATE, None)
    mlflow_client.set_model_version_tag(name, version, Tag.ROLLED_BACK_AT, model_registry.now_iso())
    mlflow_client.set_model_version_tag(name, version, Tag.ROLLBACK_REASON, reason[:4000])
    was = removed.get("mode") or "no"
    return f"the candidate was removed from the server ({was} mode)"


def _finite(value):
    """The verdict's numbers as JSON without NaN (an XCom and an event extra)."""
    import math

    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- 2c. a person's approval (MLOPS_PROMOTION_APPROVAL=required) ---------------------------
APPROVE, REJECT = "Approve", "Reject"


def approval_request(shadow: dict | None, canary: dict | None, minutes: float) -> dict | None:
    """What a person is asked before promotion, with the shadow's and canary's numbers: {subject, body,
    version, production_version}; None when there is nothing to ask (the canary was not staged: a first
    deployment or MLOPS_ROLLOUT=direct is not held for approval)."""
    if not canary or not canary.get("staged"):
        return None
    version, production = str(canary["version"]), canary.get("production_version")
    body = [f"Version **{version}** passed its shadow and its canary beside production **{production}**, "
            f"which serves every flight outside the canary's {_number(canary.get('share'))} share meanwhile.",
            "",
            f"- **Approve**: version {version} is promoted to all traffic.",
            f"- **Reject**, or no answer within {minutes:g} minutes: version {version} is removed from the "
            f"server and production {production} is left alone.", ""]
    for verdict in (shadow, canary):
        if verdict and verdict.get("staged"):
            body += _verdict_lines(verdict)
    return {"subject": f"Promote version {version} to all traffic? (production: {production})",
            "body": "\n".join(body), "version": version, "production_version": production}


def _verdict_lines(verdict: dict) -> list[str]:
    lines = [f"**{verdict['stage']}** since {verdict.get('since')}: {verdict.get('verdict')}", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {key} | {_number(value)} |" for key, value in _flat(verdict.get("numbers") or {})]
    return lines + [""]


def _flat(numbers: dict, prefix: str = ""):
    for key, value in numbers.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def approval_outcome(event: dict, canary: dict, minutes: float) -> tuple[bool, str]:
    """(approved, what the run says) from the answer the approval step resumed with.

    A rejection names who rejected; no answer within the timeout is taken as a rejection
    (the operator's default) and says so.
    """
    version, production = canary["version"], canary.get("production_version")
    chosen = list(event.get("chosen_options") or [])
    user = event.get("responded_by_user") or {}
    who = (f"{user.get('name') or user.get('id')} (user id {user.get('id')})" if user.get("id") is not None
           else user.get("name") or None)
    at = event.get("responded_at")
    at = at.isoformat(timespec="seconds") if hasattr(at, "isoformat") else at
    if chosen == [APPROVE]:
        return True, f"promotion of version {version} approved by {who or 'an unnamed user'} at {at}"
    if event.get("timedout") or who is None:
        return False, (f"promotion of version {version} was not approved: no answer within {minutes:g} minutes "
                       f"(taken as {REJECT}). Production {production} is left alone")
    return False, (f"promotion of version {version} rejected by {who} at {at} (chosen: {chosen}). "
                   f"Production {production} is left alone")


def approval_alert(request: dict, link: str | None, run_id: str | None, minutes: float):
    """The alert telling a person that a promotion waits for their answer."""
    from alerts import Alert

    return Alert(
        kind="approval_needed", title=request["subject"],
        text=f"answer within {minutes:g} minutes (no answer: rejected) at {link or 'Airflow: Required Actions'}"
             f"\n{request['body']}",
        fields={"dag_id": "serving", "task_id": "approve_promotion", "run_id": run_id,
                "version": request["version"], "production_version": request["production_version"],
                "link": link})


# -- 3. promote -----------------------------------------------------------------------
def promote(version: str, cfg: settings.Settings | None = None) -> dict:
    """Move `production` to `version` and `previous` to the old production. Idempotent."""
    cfg = cfg or settings.get()
    uri, name = cfg.mlflow_tracking_uri, cfg.model_name
    mlflow_client = model_registry.client(uri)
    production = model_registry.production_version(uri, name)
    if production == str(version):  # a re-run after the move: report the recorded promotion
        tags = model_registry.version_tags(mlflow_client, name, version)
        return _promotion(name, version, tags.get(Tag.PREVIOUS_PRODUCTION) or None,
                          tags.get(Tag.PRIOR_PREVIOUS) or None, tags.get(Tag.PROMOTED_AT, ""))
    prior_previous = model_registry.alias_version(uri, name, model_registry.PREVIOUS)
    when = model_registry.now_iso()
    try:
        mlflow_client.set_model_version_tag(name, version, Tag.PREVIOUS_PRODUCTION, production or "")
        mlflow_client.set_model_version_tag(name, version, Tag.PRIOR_PREVIOUS, prior_previous or "")
        mlflow_client.set_model_version_tag(name, version, Tag.PROMOTED_AT, when)
        model_registry.point_alias(mlflow_client, name, model_registry.PRODUCTION, version)
        if production is not None:
            model_registry.point_alias(mlflow_client, name, model_registry.PREVIOUS, production)
            registry.mark_retired(mlflow_client, name, production, when)
        registry.mark_deployed(mlflow_client, name, version, when)
        if model_registry.alias_version(uri, name, model_registry.CANDIDATE) == str(version):
            model_registry.point_alias(mlflow_client, name, model_registry.CANDIDATE, None)
    except Exception:
        log.exception("promotion of %s failed half-way: restoring production=%s previous=%s",
                      version, production, prior_previous)
        model_registry.point_alias(mlflow_client, name, model_registry.PRODUCTION, production)
        model_registry.point_alias(mlflow_client, name, model_registry.PREVIOUS, prior_previous)
        raise
    log.info("production: %s -> %s", production, version)
    return _promotion(name, version, production, prior_previous, when)


def _promotion(name: str, version: str, previous: str | None, prior_previous: str | None, when: str) -> dict:
    return {"model_name": name, "version": str(version), "previous_version": previous,
            "prior_previous_version": prior_previous, "promoted_at": when}


# -- 4. reload ------------------------------------------------------------------------
def reload_server(version: str, cfg: settings.Settings | None = None) -> dict:
    """Tell the server to load the production alias now; it must answer with `version`."""
    server = ServerClient((cfg or settings.get()).model_server_url)
    try:
        answer = server.reload()
    finally:
        server.close()
    if answer.get("version") != str(version):
        raise DeployFailed(f"the server reloaded version {answer.get('version')}, expected {version}")
    return answer


# -- 5. smoke -------------------------------------------------------------------------
def smoke_flights(version: str, cfg: settings.Settings | None = None, count: int = SMOKE_FLIGHTS):
    """A few real flights from the version's test range in the feature store."""
    from training.dataset import labelled_flights_between

    cfg = cfg or settings.get()
    tags = model_registry.version_tags(model_registry.client(cfg.mlflow_tracking_uri), cfg.model_name, version)
    return labelled_flights_between(tags[Tag.range_start("test")], tags[Tag.range_end("test")], cap=count)


def smoke_test(version: str, cfg: settings.Settings | None = None, payloads: list[dict] | None = None) -> dict:
    """Single and batch predictions on the running server; all must answer with `version`."""
    cfg = cfg or settings.get()
    if payloads is None:
        from features.compute import PREDICTION_LEAD

        payloads = [flight_table_body(row, as_of=row["event_timestamp"] - PREDICTION_LEAD)
                    for _, row in smoke_flights(version, cfg).iterrows()]
    if not payloads:
        raise DeployFailed("no flights to smoke-test with")
    server = ServerClient(cfg.model_server_url)
    try:
        singles = [server.predict(p) for p in payloads]
        batch = server.predict_batch(payloads)
    finally:
        server.close()
    found = [_problem(resp, version) for resp in singles] + [_problem(batch, version, batch=True)]
    problems = [p for p in found if p] or _consistency(singles, batch)
    if problems:
        raise DeployFailed(f"smoke test of version {version} failed: " + "; ".join(problems[:5]))
    latencies = [r.elapsed.total_seconds() * 1000 for r in singles]
    probabilities = [r.json()["probability"] for r in singles]
    return {
        "requests": len(singles) + 1, "flights": len(payloads),
        "latency_ms_p50": float(np.percentile(latencies, 50)), "latency_ms_max": float(max(latencies)),
        "batch_latency_ms": batch.elapsed.total_seconds() * 1000, "mean_probability": float(np.mean(probabilities)),
        "unknown_entities": sum(len(r.json()["unknown_entities"]) for r in singles),
    }


def _problem(resp, version: str, batch: bool = False) -> str | None:
    what = "POST /predict/batch" if batch else "POST /predict"
    if resp.status_code != 200:
        return f"{what} answered {resp.status_code}: {resp.text[:300]}"
    body = resp.json()
    answers = body["predictions"] if batch else [body]
    if body["model_version"] != str(version):
        return f"{what} answered with version {body['model_version']}, expected {version}"
    if not all(0.0 <= a["probability"] <= 1.0 for a in answers):
        return f"{what} gave a probability outside [0, 1]"
    return None


def _consistency(singles: list, batch) -> list[str]:
    single = np.array([r.json()["probability"] for r in singles])
    batched = np.array([a["probability"] for a in batch.json()["predictions"]])
    if single.shape != batched.shape or not np.allclose(single, batched, rtol=0, atol=1e-9):
        return [f"batch and single predictions differ: {batched.tolist()} vs {single.tolist()}"]
    return []


# -- publish --------------------------------------------------------------------------
def publish(promotion: dict, validation: dict, smoke: dict, verdicts: list[dict] | None = None,
            ) -> datasets.DeployedModelExtra:
    """The `deployed_model` event extra of a finished deployment, checked against its type."""
    staged = [v for v in verdicts or [] if v and v.get("staged")]
    rollout = {v["stage"]: {k: v.get(k) for k in ("since", "share", "verdict", "numbers", "server_counts")}
               for v in staged} or None
    return datasets.check_extra(datasets.deployed_model, datasets.deployed_model_extra(
        model_name=promotion["model_name"], version=promotion["version"],
        previous_version=promotion["previous_version"], validation=validation, smoke=smoke, rollout=rollout,
    ))


# -- rollback -------------------------------------------------------------------------
def rollback(promotion: dict, reason: str, cfg: settings.Settings | None = None) -> dict:
    """Put `production`/`previous` back as they were before `promotion`, and make the server follow."""
    cfg = cfg or settings.get()
    uri, name = cfg.mlflow_tracking_uri, promotion["model_name"]
    mlflow_client = model_registry.client(uri)
    version, previous = promotion["version"], promotion["previous_version"]
    production = model_registry.production_version(uri, name)
    if production not in (str(version), previous):
        raise DeployFailed(f"production points to {production}, neither {version} nor {previous}: "
                           "someone else moved it, so the rollback leaves it alone")
    when = model_registry.now_iso()
    model_registry.point_alias(mlflow_client, name, model_registry.PRODUCTION, previous)
    model_registry.point_alias(mlflow_client, name, model_registry.PREVIOUS, promotion["prior_previous_version"])
    if production == str(version):
        registry.mark_retired(mlflow_client, name, version, when)
        mlflow_client.set_model_version_tag(name, version, Tag.ROLLED_BACK_AT, when)
        mlflow_client.set_model_version_tag(name, version, Tag.ROLLBACK_REASON, reason[:4000])
        if previous is not None:
            registry.mark_deployed(mlflow_client, name, previous, when)
    log.warning("rolled back %s: production is %s again (%s)", version, previous, reason)
    return {"rolled_back_version": str(version), "production": previous, "server": _server_follows(previous, cfg)}


def rollback_failed_run(ti, promote_task_id: str, rollout_task_ids: list[str] | tuple = ()) -> str:
    """The serving DAG's rollback step: undo the alias move, if there was one, or end the rollout.

    The steps come from the DAG itself: the alias moves in `promote_task_id`; the
    steps after it are the rollback's other upstream tasks. `rollout_task_ids` are the
    tasks that put the candidate on the server (their plans say whether they did).
    Returns the message the run must fail with, naming the failed steps' reasons.
    """
    dag = ti.task.dag
    order = [t.task_id for t in dag.topological_sort()]
    promote = dag.get_task(promote_task_id)
    before = promote.get_flat_relative_ids(upstream=True) | {promote_task_id}
    after = set(ti.task.upstream_task_ids) - before
    promotion = ti.xcom_pull(task_ids=promote_task_id)
    if not promotion:
        reasons = recorded_reasons(ti, [t for t in order if t in before])
        plans = [p for t in rollout_task_ids if (p := ti.xcom_pull(task_ids=t)) and p.get("staged")]
        if plans:
            removed = abort_rollout(plans[-1], reasons)
            return (f"version {plans[-1]['version']} was rolled back from its {plans[-1]['stage']}: production "
                    f"{plans[-1]['production_version']} serves all traffic, {removed}. Reason: {reasons}")
        return f"nothing to roll back, production is unchanged. {reasons}"
    reason = recorded_reasons(ti, [t for t in order if t in after])
    outcome = rollback(promotion, reason)
    return (f"version {promotion['version']} was rolled back; production is "
            f"{promotion['previous_version']} again ({outcome['server']}). Reason: {reason}")


def _server_follows(version: str | None, cfg: settings.Settings) -> str:
    """Reload the server and wait until it reports `version`; returns what it reports."""
    server = ServerClient(cfg.model_server_url)
    try:
        try:
            server.reload()
        except Exception as exc:  # the server's poll of the alias is the fallback
            log.error("the server did not reload after the rollback: %s", exc)
        seen = server.wait_for_version(version, timeout=cfg.deploy_timeout_seconds)
    finally:
        server.close()
    if seen != version:
        raise DeployFailed(f"rolled back the aliases to {version}, but the server still reports {seen}")
    return f"serving {version}" if version else "no model (there was no previous production version)"
