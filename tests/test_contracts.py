"""Each contract between the stages has one owner module; no other product module writes its names.

A stage that keeps its own copy of a contract's name (an alias, a metric, a
feature, a path of the inference log or the training reference) drifts silently
when the owner changes it. This scan finds such copies: a string literal equal to
one of the contract's names, in product code outside its owner. Dictionary keys,
subscripts and `.get(...)` keys are not copies (they read a column or a field).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import model_registry
import settings
from features import names
from serving import inference_log
from training import metrics, tracking

REPO = Path(__file__).resolve().parents[1]
PRODUCT = sorted([*REPO.glob("*.py"), *(p for d in ("features", "training", "serving", "monitoring", "ops", "dags",
                                                     "bench") for p in (REPO / d).rglob("*.py"))])

# contract: (its names, the module that owns them)
CONTRACTS = {
    "registry aliases": ({model_registry.PRODUCTION, model_registry.PREVIOUS, model_registry.CHALLENGER,
                          model_registry.CANDIDATE},
                         "model_registry.py"),
    "quality metrics": (set(metrics.METRICS), "training/metrics.py"),
    "feature names": ((set(names.MODEL_FEATURES) - set(names.REQUEST_FEATURES)) | {names.FEATURE_SERVICE},
                      "features/names.py"),
    "inference log layout": ({inference_log.INFERENCE_DIR}, "serving/inference_log.py"),
    "training reference": ({tracking.REFERENCE_DIR, tracking.REFERENCE_FILE, tracking.REFERENCE_ARTIFACT},
                           "training/tracking.py"),
}
# Configuration defaults are read from the environment in one place; they are checked below.
ALLOWED = {("quality metrics", "settings.py")}


def copies(path: Path, values: set[str]) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            reads.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Subscript):
            reads.add(id(node.slice))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            reads.add(id(node.value))  # a docstring
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args:
            reads.add(id(node.args[0]))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in values
            and id(node) not in reads]


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_only_the_owner_writes_the_contracts_names(contract):
    values, owner = CONTRACTS[contract]
    found = {}
    for path in PRODUCT:
        rel = path.relative_to(REPO).as_posix()
        if rel != owner and (contract, rel) not in ALLOWED and (hits := copies(path, values)):
            found[rel] = hits
    assert found == {}, f"{contract} are owned by {owner}; copies elsewhere: {found}"


def test_the_scan_finds_a_copy(tmp_path):
    copy = tmp_path / "stage.py"
    copy.write_text('ALIAS = "production"\nrow["production"]\nd.get("production")\n{"production": 1}\n')
    assert copies(copy, {"production"}) == [(1, "production")]


def test_the_configured_gate_metric_is_a_metric():
    assert settings.load().gate_metric == metrics.PRIMARY in metrics.METRICS
