"""Stage: store. Where a run's files live between the cluster and the laptop.

One interface over two backends: a local directory (the embedded default) and
S3 or anything that speaks its protocol (MinIO, Ceph, R2, ...). A run occupies
one prefix, ``<store>/<run-id>/``, laid out like a local run directory:
run.json, recipe.yml, metrics.jsonl, events.jsonl, ray/ (checkpoints),
export/ (manifest.json last).

Credentials are never part of a store's description: boto3 (and pyarrow, for Ray
Train's checkpoints) find them in the environment, a named AWS profile or the
instance's role, on each side separately.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.errors import StoreError

CHUNK = 1 << 18  # streaming read size: small enough that an interrupted part loses little



class StoreConfig(BaseModel):
    """How to reach a store: no secrets here, by design."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="s3://bucket/prefix, file:///abs/path or a local path")
    endpoint_url: str | None = Field(None, description="for S3-compatible servers (MinIO, R2, ...)")
    region: str | None = None
    profile: str | None = Field(None, description="a named AWS profile on this machine")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("", "file", "s3"):
            raise ValueError(f"unsupported store {value!r}: use s3://bucket/prefix or a local directory")
        if scheme == "s3" and not urlsplit(value).netloc:
            raise ValueError(f"{value!r}: no bucket")
        return value


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str  # changes whenever the object does


class Store(Protocol):
    uri: str

    def put_file(self, local: Path, key: str) -> None: ...

    def put_bytes(self, data: bytes, key: str) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, local: Path) -> None:
        """Stream the object into `local` (never whole in memory)."""

    def stat(self, key: str) -> ObjectInfo | None: ...

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the object, streamed in chunks."""

    def list(self, prefix: str) -> list[str]: ...

    def folders(self, prefix: str = "") -> list[str]:
        """The names of the folders directly under `prefix` (one level, not every object below them)."""

    def delete(self, key: str) -> None: ...

    def ray_storage(self, key: str) -> tuple[str, Any]:
        """(storage_path, pyarrow filesystem or None) for Ray Train's RunConfig."""


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StoreError(f"{key}: outside the store")
        return path

    def put_file(self, local: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.put")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)

    def put_bytes(self, data: bytes, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.put")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.uri}/{key}: not in the store") from None

    def get_file(self, key: str, local: Path) -> None:
        try:
            shutil.copyfile(self._path(key), local)
        except FileNotFoundError:
            raise StoreError(f"{self.uri}/{key}: not in the store") from None

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(st.st_size, f"{st.st_mtime_ns}-{st.st_size}")

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        with self._path(key).open("rb") as fh:
            fh.seek(start)
            left = end - start
            while left > 0:
                block = fh.read(min(CHUNK, left))
                if not block:
                    raise StoreError(f"{key}: shorter than expected")
                left -= len(block)
                yield block

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not p.name.endswith(".put"))

    def folders(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # directories the deleted file leaves empty go too, up to the root
            if parent == self.root or not parent.is_relative_to(self.root) or any(parent.iterdir()):
                break
            parent.rmdir()

    def ray_storage(self, key: str) -> tuple[str, Any]:
        return str(self._path(key)), None


class S3Store:
    def __init__(self, config: StoreConfig) -> None:
        import boto3
        from botocore.config import Config

        parts = urlsplit(config.uri)
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        self.uri = config.uri.rstrip("/")
        self.config = config
        session = boto3.session.Session(profile_name=config.profile, region_name=config.region)
        self.client = session.client("s3", endpoint_url=config.endpoint_url,
                                     config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                                   max_pool_connections=32))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, local: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        self.client.upload_file(str(local), self.bucket, self._key(key),
                                Config=TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20))

    def put_bytes(self, data: bytes, key: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise StoreError(f"{self.uri}/{key}: not in the store") from None

    def get_file(self, key: str, local: Path) -> None:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import ClientError

        # s3transfer: ranged parts written to the file as they come; memory is parts in flight, not the object.
        config = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
        try:
            self.client.download_file(self.bucket, self._key(key), str(local), Config=config)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise StoreError(f"{self.uri}/{key}: not in the store") from None
            raise

    def stat(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(int(head["ContentLength"]), head["ETag"].strip('"'))

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        if end <= start:
            return
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}")["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def list(self, prefix: str) -> list[str]:
        out = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self._key(prefix)):
            out += [obj["Key"][strip:] for obj in page.get("Contents", [])]
        return sorted(out)

    def folders(self, prefix: str = "") -> list[str]:
        # One level, by the delimiter: a store holding many runs lists their names, not their checkpoints.
        below = (self._key(prefix).rstrip("/") + "/") if (prefix or self.prefix) else ""
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=below,
                                                                          Delimiter="/"):
            out += [common["Prefix"][len(below):].rstrip("/") for common in page.get("CommonPrefixes", [])]
        return sorted(out)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def ray_storage(self, key: str) -> tuple[str, Any]:
        from pyarrow import fs

        kwargs: dict[str, Any] = {}
        if self.config.endpoint_url:
            endpoint = urlsplit(self.config.endpoint_url)
            kwargs.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https")
        if self.config.region:
            kwargs["region"] = self.config.region
        return f"{self.bucket}/{self._key(key)}", fs.S3FileSystem(**kwargs)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """What a store raises when it cannot be reached, drops a transfer or refuses a request (after the
    client's own retries): botocore's errors, and boto3's transfer errors (an upload_file that gave up
    raises S3UploadFailedError, which is not a botocore error), where boto3 is installed."""
    try:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # a laptop with only local stores: nothing of the kind can be raised
        return ()
    return (BotoCoreError, ClientError, Boto3Error)


def open_store(config: StoreConfig | str) -> Store:
    if isinstance(config, str):
        config = StoreConfig(uri=config)
    parts = urlsplit(config.uri)
    if parts.scheme == "s3":
        return S3Store(config)
    return LocalStore(Path(parts.path if parts.scheme == "file" else config.uri))


def put_tree(store: Store, local: Path, key: str, last: str | None = None, threads: int = 8) -> int:
    """Upload a directory; `last` (e.g. manifest.json) goes only after everything else is in."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    rest = [p for p in files if p.relative_to(local).as_posix() != last]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda p: store.put_file(p, f"{key}/{p.relative_to(local).as_posix()}"), rest))
    if last and (local / last).is_file():
        store.put_file(local / last, f"{key}/{last}")
    return len(files)


def fetch_missing(store: Store, prefix: str, dest: Path) -> int:
    """Copy objects under `prefix` into `dest` (same relative paths) unless already there; atomic per file.

    Safe for several processes on one node at once: each writes its own temporary name. Every key is
    checked before anything is fetched: one that would land outside `dest` (`run/inputs/../../x`, or
    through a symlink) is refused in one line, whatever the store holds."""
    from orchestrator.manifest import inside

    planned = []
    for key in store.list(prefix):
        rel = key.removeprefix(prefix).lstrip("/")
        if not rel:
            continue
        try:
            planned.append((key, inside(dest, rel)))
        except ValueError as exc:
            raise StoreError(f"{key}: refused: {exc}; nothing fetched") from None
    count = 0
    for key, target in planned:
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.fetch")
        try:
            store.get_file(key, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        count += 1
    return count
