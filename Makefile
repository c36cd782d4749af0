# Everything a user runs. `make demo` is the main job; `make test` passes the tests.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
export PYTEST_DISABLE_PLUGIN_AUTOLOAD := 1
MONTH ?= 2013-02
# PROFILE=prod runs the same stack on Postgres + an S3-compatible server (ops/profiles/prod.env);
# PROFILE=celery on Airflow's CeleryExecutor with two workers, Redis and Postgres (ops/profiles/celery.env).
PROFILE ?= embedded
WITH_PROFILE := $(if $(filter-out embedded,$(PROFILE)),set -a && . ops/profiles/$(PROFILE).env && set +a &&,)
SPEED ?= 3600
DAYS ?= 0

.PHONY: venv up down status drop demo test test-fast bench lineage replay lock clean

.venv/.installed: requirements.lock
	bash ops/venv.sh
	touch $@

venv: .venv/.installed

up: venv ## start the embedded stack and wait until it is healthy
	$(WITH_PROFILE) $(PY) -m ops.stack up

down: ## stop exactly what `make up` started
	@if [ -x $(PY) ]; then $(WITH_PROFILE) $(PY) -m ops.stack down; fi

status: venv
	$(WITH_PROFILE) $(PY) -m ops.stack status

drop: venv ## copy MONTH's flights and weather into the landing zone
	$(WITH_PROFILE) $(PY) -m features.samples drop $(MONTH)

# The demo's staged rollout judges the new version on fewer live rows than the defaults, with half the
# flights in the canary, so the whole loop fits in minutes (only when the demo starts the stack; a stack
# already up keeps its own settings).
demo: venv ## bring the stack up, drop data and follow the chain hop by hop
	$(WITH_PROFILE) MLOPS_SHADOW_MIN_ROWS=$${MLOPS_SHADOW_MIN_ROWS:-200} \
	  MLOPS_CANARY_SHARE=$${MLOPS_CANARY_SHARE:-0.5} MLOPS_CANARY_MIN_ROWS=$${MLOPS_CANARY_MIN_ROWS:-250} \
	  MLOPS_ROLLOUT_MIN_LABELLED=$${MLOPS_ROLLOUT_MIN_LABELLED:-150} \
	  $(PY) -m ops.demo

test: venv ## the whole suite, including the integration tests on real services
	$(PY) -m pytest

test-fast: venv ## unit tests only
	$(PY) -m pytest -m "not integration and not e2e"

replay: venv ## walk MONTH in event time: live feeds, each flight's request at its time, outcomes as flights arrive
	$(WITH_PROFILE) $(PY) -m ops.replay --month $(MONTH) --speed $(SPEED) $(if $(filter-out 0,$(DAYS)),--days $(DAYS),)

lineage: venv ## follow the asset events back from the production model (VERSIONS="3 7" or VERSIONS=--all: those)
	$(WITH_PROFILE) $(PY) -m ops.lineage $(VERSIONS)

bench: venv
	$(PY) -m bench

lock: ## re-resolve requirements.lock from pyproject.toml
	uv pip compile pyproject.toml --python-version 3.11 -o requirements.lock

clean: down ## stop the stack and delete its state (PROFILE=prod|celery also drops its databases and Redis keys)
	$(WITH_PROFILE) $(PY) -m ops.stack clean
	$(WITH_PROFILE) rm -rf "$${MLOPS_HOME:-.local}"
