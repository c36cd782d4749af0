"""The one storage abstraction behaves the same on file:// and s3:// (moto's S3 server)."""

from __future__ import annotations

import pytest

import storage
from features.landing import candidate_files
from support import free_port, reload_settings, use_home


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path, monkeypatch) -> storage.Storage:
    """A storage on file:// or s3://; afterwards the settings of the session again (later tests read them)."""
    yield _store(request, tmp_path, monkeypatch)
    monkeypatch.undo()
    reload_settings()


def _store(request, tmp_path, monkeypatch) -> storage.Storage:
    if request.param == "file":
        use_home(monkeypatch, tmp_path)
        return storage.get()
    endpoint = request.getfixturevalue("s3_endpoint")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    bucket = f"mlops-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    use_home(monkeypatch, tmp_path, MLOPS_STORAGE_URL=f"s3://{bucket}/root", MLOPS_S3_ENDPOINT_URL=endpoint)
    return storage.get()


def test_write_read_move_list(store):
    url = store.url("landing", "a.json")
    store.write_json(url, {"x": 1})
    assert store.read_json(url) == {"x": 1}
    assert [i["url"] for i in store.list_files(store.url("landing"))] == [url]
    target = store.url("processed", "b.json")
    store.move(url, target)
    assert not store.exists(url) and store.read_json(target) == {"x": 1}
    assert store.list_files(store.url("landing")) == []


def test_parquet_roundtrip(store):
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2], "t": pd.to_datetime(["2013-01-01", "2013-01-02"], utc=True)})
    store.write_parquet(store.url("x.parquet"), df)
    pd.testing.assert_frame_equal(store.read_parquet(store.url("x.parquet")), df)


def test_landing_ignores_files_being_written(store):
    store.write_bytes(store.url("landing", "done.csv"), b"a\n1\n")
    store.write_bytes(store.url("landing", ".hidden.csv"), b"a\n")
    store.write_bytes(store.url("landing", "copying.csv.part"), b"a\n")
    found = candidate_files(store.url("landing"))
    assert list(found) == [store.url("landing", "done.csv")]
    size, _ = found[store.url("landing", "done.csv")]
    assert size == 4
