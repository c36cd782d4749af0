"""The Feast store built from settings, and the offline tables it reads.

Embedded: file registry, SQLite online store. Compose: SQL registry and
Postgres online store, chosen by giving `postgresql://` URLs in settings; a
`redis://host:port/db` online store URL selects Feast's Redis online store.
The offline store is duckdb over folders of parquet files, one per batch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pandas as pd

import settings
import storage

FLIGHTS_TABLE = "flights"  # labelled flights: entity rows for training, history for rolling stats


def repo_config(cfg: settings.Settings | None = None):
    from feast.infra.registry.sql import SqlRegistryConfig
    from feast.repo_config import RegistryConfig, RepoConfig

    cfg = cfg or settings.get()
    if cfg.feast_registry.startswith("postgresql"):
        registry = SqlRegistryConfig(registry_type="sql", path=cfg.feast_registry, cache_ttl_seconds=60)
    else:
        Path(cfg.feast_registry).parent.mkdir(parents=True, exist_ok=True)
        registry = RegistryConfig(path=cfg.feast_registry, cache_ttl_seconds=60)
    if cfg.feast_online_store.startswith("postgresql"):
        url = urlparse(cfg.feast_online_store)
        online = {
            "type": "postgres",
            "host": url.hostname or "localhost",
            "port": url.port or 5432,
            "database": url.path.lstrip("/"),
            "user": unquote(url.username or "postgres"),
            "password": unquote(url.password or ""),
            # Feast defaults to "require"; "prefer" also works with servers without TLS.
            "sslmode": parse_qs(url.query).get("sslmode", ["prefer"])[0],
        }
    elif cfg.feast_online_store.startswith(("redis://", "rediss://")):
        url = urlparse(cfg.feast_online_store)
        options = [f"{url.hostname or 'localhost'}:{url.port or 6379}", f"db={url.path.lstrip('/') or 0}"]
        if url.password:
            options.append(f"password={unquote(url.password)}")
        if url.scheme == "rediss":
            options.append("ssl=true")
        online = {"type": "redis", "connection_string": ",".join(options)}
    else:
        Path(cfg.feast_online_store).parent.mkdir(parents=True, exist_ok=True)
        online = {"type": "sqlite", "path": cfg.feast_online_store}
    return RepoConfig(
        project=cfg.feast_project,
        provider="local",
        registry=registry,
        offline_store={"type": "duckdb"},
        online_store=online,
        entity_key_serialization_version=3,
        # The sources in features.repo have relative paths: the offline tables under this folder.
        repo_path=str(cfg.feast_offline_dir),
    )


def feature_store(apply: bool = False):
    """A FeatureStore on the configured registry; `apply=True` registers the repo first."""
    from feast import FeatureStore

    store = FeatureStore(config=repo_config())
    if apply:
        from features import repo

        store.apply(with_offline_paths(repo.OBJECTS, store.config.repo_path))
    return store


def with_offline_paths(objects: list, repo_path) -> list:
    """Copies of the repo's objects, every file source's relative path resolved against `repo_path`.

    `features.repo` declares relative paths (the table names). Feast resolves them against
    `RepoConfig.repo_path` when it inspects a source (`FileSource.get_uri_for_file_path`), but
    Feast 0.67's duckdb offline store reads `FileSource.path` as given, that is against the
    process's working directory. So the registry gets absolute paths (in the views and in the
    feature service's projections of them), and the objects in `features.repo` stay as declared.
    """
    import copy

    from feast import FileSource

    objects = copy.deepcopy(list(objects))
    holders = [*objects, *(p for o in objects for p in getattr(o, "feature_view_projections", ()))]
    for holder in holders:
        source = getattr(holder, "batch_source", None)
        if isinstance(source, FileSource):
            source.file_options.uri = FileSource.get_uri_for_file_path(repo_path, source.path)
    return objects


def table_dir(name: str) -> Path:
    return settings.get().feast_offline_dir / name


def write_table(name: str, part: str, df: pd.DataFrame) -> Path:
    """Write one part file of an offline table, atomically. The same part name overwrites: re-runs are safe."""
    target = table_dir(name) / f"{part}.parquet"
    storage.Storage(str(target.parent)).write_parquet(str(target), df)
    return target


def read_offline_table(name: str, exclude_parts: tuple[str, ...] = (), filters=None,
                       columns: list[str] | None = None) -> pd.DataFrame:
    """All part files of an offline table (minus `exclude_parts`), or an empty frame; `columns`: only those."""
    import pyarrow.dataset as ds

    folder = table_dir(name)
    files = sorted(
        str(p) for p in folder.glob("*.parquet") if p.stem not in exclude_parts
    ) if folder.exists() else []
    if not files:
        return pd.DataFrame()
    table = ds.dataset(files, format="parquet").to_table(columns=columns, filter=filters)
    return table.to_pandas()


def materialize(start: datetime, end: datetime, views: list[str] | None = None) -> None:
    """Load the offline rows stamped in [start, end] into the online store."""
    store = feature_store(apply=True)
    store.materialize(start_date=start, end_date=end + timedelta(seconds=1), feature_views=views)
