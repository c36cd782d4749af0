"""Run the benchmarks: every module `bench/<name>_bench.py`, through its `main(argv) -> int`.

    python -m bench                  # all of them but the opt-in ones, one after the other
    python -m bench serving dataops  # only these (by name, without `_bench`)
    python -m bench celery           # opt-in: starts two celery stacks (about 25 min)
    python -m bench chain --profile embedded celery   # one benchmark with its own options

Results land in bench/results/<name>.json; each benchmark prints its own table.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


# Run only when named: they start several stacks of their own and would double `make bench`.
OPT_IN = {"celery", "retrain", "rollout"}  # retrain: about 13 min of fitting; rollout: a stack of its own, ~6 min


def available() -> list[str]:
    return sorted(m.name[: -len("_bench")] for m in pkgutil.iter_modules(bench.__path__) if m.name.endswith("_bench"))


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Benchmark names, then the options (from the first argument that starts with '-') for them."""
    first = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    return argv[:first], argv[first:]


def main(argv: list[str] | None = None) -> int:
    names, options = split(sys.argv[1:] if argv is None else argv)
    wanted = names or [n for n in available() if n not in OPT_IN]
    unknown = sorted(set(wanted) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    if options and len(wanted) != 1:
        print(f"options {options} need exactly one benchmark named before them", file=sys.stderr)
        return 2
    failed = []
    for name in wanted:
        print(f"\n## {name}\n", flush=True)
        if importlib.import_module(f"bench.{name}_bench").main(options) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
