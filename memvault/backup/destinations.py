"""Where backups live: local or mounted directories, and S3-compatible object storage.

Keys are relative POSIX paths ("snapshots/<id>/manifest.json"). Every write is atomic (a
temporary name, then a no-clobber rename; an object PUT is atomic by itself) and never replaces
an existing file, so a finished backup cannot be overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from memvault.backup.errors import BackupCorrupt, DestinationError

if TYPE_CHECKING:
    from memvault.config import Settings

log = logging.getLogger("memvault.backup")

CHUNK = 1 << 20
T = TypeVar("T")


class Destination(ABC):
    url: str

    @abstractmethod
    def put_file(self, key: str, source: Path) -> None:
        """Store a local file under key; refuses (DestinationError) if key exists."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def replace_bytes(self, key: str, data: bytes) -> None:
        """Store data under key, replacing what is there (atomically). Only for the few
        mutable pointers (a lineage's head, the destination marker), never for backup data."""

    @abstractmethod
    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """The stored bytes of key; a missing key raises BackupCorrupt naming it."""

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Size in bytes, or None when the key does not exist."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """All keys under prefix (recursive), sorted."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None: ...

    def __str__(self) -> str:
        return self.url


class LocalDestination(Destination):
    """A directory on a local disk or a mounted NAS share."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _fail(self, action: str, key: str, exc: OSError) -> DestinationError:
        reason = exc.strerror or str(exc)
        hint = ("free space on the backup disk or point MEMVAULT_BACKUP_URLS elsewhere"
                if exc.errno == 28 else "check that the backup directory exists and is writable")
        return DestinationError(f"cannot {action} {key} in {self.root}: {reason}", hint=hint)

    def _write_new(self, key: str, fill: Callable[[Any], None]) -> None:
        final = self._path(key)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                raise DestinationError(f"{key} already exists in {self.root}; refusing to "
                                       "overwrite a backup file")
            with open(tmp, "wb") as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, final)  # no-clobber: fails if final appeared meanwhile
            _fsync_dir(final.parent)
        except FileExistsError:
            raise DestinationError(f"{key} already exists in {self.root}; refusing to "
                                   "overwrite a backup file") from None
        except OSError as exc:
            raise self._fail("write", key, exc) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def put_file(self, key: str, source: Path) -> None:
        # Same filesystem (the default: backups under the data dir): a hard link is an atomic,
        # no-clobber publish of the already fsynced staged file, without copying it.
        final = self._path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, final)
            _fsync_dir(final.parent)
            return
        except FileExistsError:
            raise DestinationError(f"{key} already exists in {self.root}; refusing to "
                                   "overwrite a backup file") from None
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise self._fail("write", key, exc) from exc

        def fill(handle: Any) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, handle, CHUNK)

        self._write_new(key, fill)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_new(key, lambda handle: handle.write(data))

    def replace_bytes(self, key: str, data: bytes) -> None:
        final = self._path(key)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise self._fail("write", key, exc) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed below, generator
        except FileNotFoundError:
            raise BackupCorrupt(f"{key} is missing from {self.root}", file=key) from None
        except OSError as exc:
            raise self._fail("read", key, exc) from exc
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file() and ".tmp-" not in path.name:
                keys.append(path.relative_to(self.root).as_posix())
        return sorted(keys)

    def delete(self, keys: list[str]) -> None:
        parents = set()
        for key in keys:
            path = self._path(key)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            parents.add(path.parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Destination(Destination):
    """s3://bucket/prefix on AWS or any S3-compatible server (MinIO, Ceph, moto...)."""

    def __init__(self, url: str, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        rest = url.removeprefix("s3://")
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise DestinationError(f"backup URL {url!r} names no bucket",
                                   hint="use s3://bucket/optional/prefix")
        self.prefix = prefix.strip("/")
        self.url = url
        self.endpoint = settings.s3_endpoint_url or "AWS"
        self.attempts = settings.s3_retries
        secret = settings.s3_secret_access_key
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            # Retries are ours (logged, counted); botocore's would hide the failures.
            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                          connect_timeout=3, read_timeout=30,
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, action: str, key: str, func: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        last: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                return func()
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status in (404, 403, 400) or exc.response.get("Error", {}).get("Code") in (
                        "NoSuchKey", "NoSuchBucket", "AccessDenied"):
                    raise self._error(action, key, exc) from exc
                last = exc
            except (BotoCoreError, OSError) as exc:
                last = exc
            log.warning("S3 %s of %s at %s failed (attempt %d/%d): %s", action, key,
                        self.endpoint, attempt, self.attempts, last)
            if attempt < self.attempts:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
        assert last is not None
        raise self._error(action, key, last, attempts=self.attempts) from last

    def _error(self, action: str, key: str, exc: Exception, attempts: int = 1
               ) -> DestinationError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return DestinationError(
            f"cannot {action} {key} in {self.url} (endpoint {self.endpoint}){tries}: {exc}",
            hint="check MEMVAULT_S3_ENDPOINT_URL, the credentials and that the bucket exists")

    def put_file(self, key: str, source: Path) -> None:
        self._refuse_existing(key)
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=64 * CHUNK, multipart_chunksize=16 * CHUNK)
        self._call("upload", key, lambda: self.client.upload_file(
            str(source), self.bucket, self._key(key), Config=config))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._refuse_existing(key)
        self._call("upload", key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data))

    def replace_bytes(self, key: str, data: bytes) -> None:
        self._call("upload", key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data))

    def _refuse_existing(self, key: str) -> None:
        if self.size(key) is not None:
            raise DestinationError(f"{key} already exists in {self.url}; refusing to overwrite "
                                   "a backup file")

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        def get() -> Any:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise BackupCorrupt(f"{key} is missing from {self.url}", file=key) from None
                raise

        body = self._call("download", key, get)["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        except Exception as exc:
            raise self._error("download", key, exc) from exc
        finally:
            body.close()

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        def head() -> int | None:
            try:
                return int(self.client.head_object(Bucket=self.bucket,
                                                   Key=self._key(key))["ContentLength"])
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise

        return self._call("stat", key, head)

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def collect() -> list[str]:
            keys = []
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=full):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
            return keys

        return sorted(self._call("list", prefix or "/", collect))

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            self._call("delete", keys[start], lambda b=batch: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": b, "Quiet": True}))


def open_destination(url: str, settings: Settings) -> Destination:
    if url.startswith("s3://"):
        return S3Destination(url, settings)
    if "://" in url and not url.startswith("file://"):
        raise DestinationError(f"unsupported backup URL {url!r}",
                               hint="use a directory path, file:///path or s3://bucket/prefix")
    return LocalDestination(url.removeprefix("file://"))


def open_destinations(settings: Settings) -> list[Destination]:
    return [open_destination(url, settings) for url in settings.backup_urls]
