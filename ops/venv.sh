#!/usr/bin/env bash
# Create .venv from requirements.lock: with uv when it can be installed, else with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 

UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  if "$PYTHON" -m pip install --quiet --user uv >/dev/null 2>&1 || "$PYTHON" -m pip install --quiet uv >/dev/null 2>&1; then
    UV=$("$PYTHON" -c 'import uv, sys; print(uv.find_uv_bin())' 2>/dev/null || true)
  fi
fi

start=$(date +%s)
if [ -n "$UV" ]; then
  echo "creating .venv with uv ($UV)"
  "$UV" venv --quiet --allow-existing --python "$PYTHON" .venv
  "$UV" pip install --quiet --python .venv/bin/python -r requirements.lock
else
  echo "uv unavailable: creating .venv with pip (slower)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.lock
fi
echo ".venv ready in $(( $(date +%s) - start ))s"
