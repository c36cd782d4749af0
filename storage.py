"""The one storage abstraction: fsspec over `file://` locally and `s3://` in compose.

Paths handed around are full URLs (`file:///...` or `s3://bucket/...`), so the
same code reads and writes either. Only fsspec and the standard library are
imported at module level; pandas is imported by the helpers that need it.
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import settings

if TYPE_CHECKING:
    import pandas as pd
    from fsspec import AbstractFileSystem


@dataclass(frozen=True)
class Storage:
    root: str
    s3_endpoint_url: str = ""

    @classmethod
    def from_settings(cls, cfg: settings.Settings | None = None) -> "Storage":
        cfg = cfg or settings.get()
        return cls(cfg.storage_url, cfg.s3_endpoint_url)

    @cached_property
    def fs(self) -> "AbstractFileSystem":
        import fsspec

        protocol = self.root.split("://", 1)[0] if "://" in self.root else "file"
        options: dict[str, Any] = {}
        if protocol == "s3" and self.s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        if protocol == "s3":
            options["skip_instance_cache"] = True
        return fsspec.filesystem(protocol, **options)

    @property
    def protocol(self) -> str:
        return self.root.split("://", 1)[0] if "://" in self.root else "file"

    def url(self, *parts: str) -> str:
        """The full URL of a path under the root: url("landing", "a.csv")."""
        return posixpath.join(self.root, *[p.strip("/") for p in parts if p])

    def _path(self, url: str) -> str:
        # fsspec implementations want the path without the scheme.
        return self.fs._strip_protocol(url)

    def as_url(self, path: str) -> str:
        """Turn a path fsspec returned (no scheme) back into a full URL."""
        if "://" in path:
            return path
        if self.protocol == "file":
            return "file://" + path
        return f"{self.protocol}://{path}"

    # -- listing -----------------------------------------------------------------
    def list_files(self, prefix: str) -> list[dict]:
        """Files directly under `prefix` (a URL), as fsspec info dicts with a `url` key."""
        path = self._path(prefix)
        self.fs.invalidate_cache(path)
        if not self.fs.exists(path):
            return []
        out = []
        for info in self.fs.ls(path, detail=True):
            if info.get("type") == "file":
                out.append({**info, "url": self.as_url(info["name"])})
        return sorted(out, key=lambda i: i["url"])

    def exists(self, url: str) -> bool:
        path = self._path(url)
        self.fs.invalidate_cache(posixpath.dirname(path))
        return self.fs.exists(path)

    # -- bytes -------------------------------------------------------------------
    def read_bytes(self, url: str) -> bytes:
        return self.fs.cat_file(self._path(url))

    def write_bytes(self, url: str, data: bytes) -> None:
        """Write so that a reader never sees half a file.

        S3 puts are atomic already; on a filesystem we write a hidden temporary
        file next to the target and rename it.
        """
        path = self._path(url)
        parent = posixpath.dirname(path)
        self.fs.makedirs(parent, exist_ok=True)
        if self.protocol == "file":
            tmp = posixpath.join(parent, f".{posixpath.basename(path)}.tmp")
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def move(self, src: str, dst: str) -> None:
        self.fs.makedirs(posixpath.dirname(self._path(dst)), exist_ok=True)
        self.fs.mv(self._path(src), self._path(dst))

    # -- structured ----------------------------------------------------------------
    def write_json(self, url: str, obj: Any) -> None:
        self.write_bytes(url, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, url: str) -> Any:
        return json.loads(self.read_bytes(url))

    def write_parquet(self, url: str, df: "pd.DataFrame") -> None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        self.write_bytes(url, buf.getvalue())

    def read_parquet(self, url: str) -> "pd.DataFrame":
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(url)))


def get() -> Storage:
    return Storage.from_settings()
