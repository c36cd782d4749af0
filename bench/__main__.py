"""Run the benchmarks: every module `bench/<name>_bench.py`, through its `main(argv) -> int`.

    python -m bench                  # all of them, one after the other
    python -m bench serving dataops  # only these (by name, without `_bench`)

Results land in bench/results/<name>.json; each benchmark prints its own table.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def available() -> list[str]:
    return sorted(m.name[: -len("_bench")] for m in pkgutil.iter_modules(bench.__path__) if m.name.endswith("_bench"))


def main(argv: list[str] | None = None) -> int:
    wanted = (sys.argv[1:] if argv is None else argv) or available()
    unknown = sorted(set(wanted) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    failed = []
    for name in wanted:
        print(f"\n## {name}\n", flush=True)
        if importlib.import_module(f"bench.{name}_bench").main([]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
