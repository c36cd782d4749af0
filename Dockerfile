# The project's one image: Airflow (api-server, scheduler, dag-processor,
# triggerer), the MLflow tracking server, the model server and the tools.
# Built by docker compose (README.md, "Run it with docker compose"); everything comes from requirements.lock,
# nothing is installed when a container starts.
#
# Base: the Docker Official Image `python`, tag 3.11-slim, listed under
# "Supported tags" on https://hub.docker.com/_/python (Python 3.11, as pyproject.toml).

# -- build: the virtualenv from the lock file ---------------------------------------
FROM python:3.11-slim AS build

# uv, pinned, from PyPI: the same installer as ops/venv.sh, several times faster than pip.
RUN python -m pip install --no-cache-dir uv==0.13.8

ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /opt/mlops
COPY requirements.lock ./
# The venv lives where the Makefile expects it (.venv/bin/python), so `make drop`
# and the other targets work in the container as they do on a developer's machine.
RUN uv venv --python /usr/local/bin/python3.11 .venv \
 && uv pip install --no-cache --python .venv/bin/python -r requirements.lock

# -- runtime ------------------------------------------------------------------------
FROM python:3.11-slim

# curl: the health checks; make: `make drop` and friends in the tools container. No git:
# GIT_PYTHON_REFRESH=quiet (below) keeps GitPython, which MLflow imports, from warning.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl make \
 && rm -rf /var/lib/apt/lists/*

# The same non-root user as the official Airflow image: uid 50000, group 0.
ARG AIRFLOW_UID=50000
RUN useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /home/airflow --create-home \
        --shell /bin/bash airflow

ENV VIRTUAL_ENV=/opt/mlops/.venv \
    PATH=/opt/mlops/.venv/bin:$PATH \
    PYTHONPATH=/opt/mlops \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    GIT_PYTHON_REFRESH=quiet \
    MLOPS_HOME=/var/lib/mlops

WORKDIR /opt/mlops
COPY --from=build /opt/mlops/.venv /opt/mlops/.venv
# The repository (see .dockerignore: no .venv, .local, .git or .env).
COPY . /opt/mlops

# Byte-compile the project (the airflow user cannot write __pycache__ here), mark the
# venv as installed for the Makefile, and create the writable folders. A named
# volume mounted on MLOPS_HOME starts with this folder's owner.
RUN python -m compileall -q -x '/(\.venv|tests)/' /opt/mlops \
 && touch /opt/mlops/.venv/.installed \
 && mkdir -p "$AIRFLOW_HOME" "$MLOPS_HOME" \
 && chown -R "${AIRFLOW_UID}:0" "$AIRFLOW_HOME" "$MLOPS_HOME" \
 && chmod -R g+rwX "$AIRFLOW_HOME" "$MLOPS_HOME"

USER ${AIRFLOW_UID}
EXPOSE 8080 5000 8000
CMD ["airflow", "version"]
