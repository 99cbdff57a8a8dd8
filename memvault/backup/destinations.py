"""Where backups live: local or mounted directories, and S3-compatible object storage.

Keys are relative POSIX paths ("snapshots/<id>/manifest.json"). Every write is atomic (a
temporary name, then a no-clobber rename; an object PUT is atomic by itself) and never replaces
an existing file, so a finished backup cannot be overwritten.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from memvault.backup.errors import BackupCorrupt, DestinationError

if TYPE_CHECKING:
    from memvault.config import Settings

log = logging.getLogger("memvault.backup")

CHUNK = 1 << 20
T = TypeVar("T")


class DeletesRefused(DestinationError):
    """Some keys were not deleted although the request as a whole was answered (S3's
    DeleteObjects answers 200 and names each key it refused). `not_deleted` maps each key to
    the reason; every other key of the request is gone."""

    code = "backup_delete_refused"

    def __init__(self, destination: str, not_deleted: dict[str, str]) -> None:
        first = "; ".join(f"{k}: {why}" for k, why in list(not_deleted.items())[:5])
        more = f" (and {len(not_deleted) - 5} more)" if len(not_deleted) > 5 else ""
        super().__init__(
            f"{len(not_deleted)} object(s) in {destination} were NOT deleted: {first}{more}",
            hint="grant the backup credentials the delete permission (s3:DeleteObject) or "
                 "make the files writable, then run `memvault backup prune` again")
        self.not_deleted = not_deleted


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

    def list(self, prefix: str) -> list[str]:
        """All keys under prefix (recursive), sorted."""
        return sorted(self.list_sizes(prefix))

    @abstractmethod
    def list_sizes(self, prefix: str) -> dict[str, int]:
        """Every key under prefix (recursive) with its size in bytes, as the listing says."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete keys (a missing key counts as deleted). Raises DeletesRefused naming every
        key that is still there, DestinationError when the destination does not answer."""

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

    def list_sizes(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return {}
        sizes = {}
        for path in base.rglob("*"):
            if ".tmp-" in path.name:
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted while listing
                stat = path.stat()
                if path.is_file():
                    sizes[path.relative_to(self.root).as_posix()] = stat.st_size
        return sizes

    def delete(self, keys: list[str]) -> None:
        parents = set()
        refused: dict[str, str] = {}
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                refused[key] = exc.strerror or str(exc)
            parents.add(path.parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty
        if refused:
            raise DeletesRefused(self.url, refused)


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
        self._put(key, lambda: self.client.upload_file(
            str(source), self.bucket, self._key(key), Config=config),
            lambda: _file_digests(source))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._refuse_existing(key)
        self._put_object(key, data)

    def replace_bytes(self, key: str, data: bytes) -> None:
        self._put_object(key, data)

    def _put_object(self, key: str, data: bytes) -> None:
        md5 = hashlib.md5(data, usedforsecurity=False)
        # Content-MD5 makes the server refuse a body damaged on the way.
        self._put(key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data,
            ContentMD5=base64.b64encode(md5.digest()).decode("ascii")),
            lambda: _Digests(len(data), md5.hexdigest(), hashlib.sha256(data).hexdigest()))

    def _put(self, key: str, send: Callable[[], object], digests: Callable[[], _Digests]
             ) -> None:
        """One upload attempt per try; when its reply is lost (a 5xx or a dropped connection
        after the server may have written it), the object is read back before the attempt
        is called failed: present with our size and checksum means written."""

        def attempt() -> None:
            try:
                send()
            except Exception:
                if self._stored_matches(key, digests()):
                    log.warning("S3 upload of %s to %s: the reply was lost but the object is "
                                "stored and checks out (size and checksum)", key, self.url)
                    return
                raise

        self._call("upload", key, attempt)

    def _stored_matches(self, key: str, want: _Digests) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            if int(head["ContentLength"]) != want.size:
                return False
            etag = str(head.get("ETag", "")).strip('"')
            if "-" not in etag and etag:  # a single-part upload: the ETag is the MD5
                return etag == want.md5
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            sha = hashlib.sha256()
            for chunk in body.iter_chunks(CHUNK):
                sha.update(chunk)
            return sha.hexdigest() == want.sha256
        except (ClientError, BotoCoreError, OSError) as exc:
            log.warning("S3 re-check of %s at %s after a failed upload failed too: %s", key,
                        self.endpoint, exc)
            return False

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

    def list_sizes(self, prefix: str) -> dict[str, int]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def collect() -> dict[str, int]:
            sizes = {}
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=full):
                sizes.update({item["Key"][strip:]: int(item.get("Size", 0))
                              for item in page.get("Contents", [])})
            return sizes

        return self._call("list", prefix or "/", collect)

    def delete(self, keys: list[str]) -> None:
        refused: dict[str, str] = {}
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            answer = self._call("delete", keys[start], lambda b=batch: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": b, "Quiet": True}))
            # A 200 answer may still refuse keys one by one (AccessDenied without
            # s3:DeleteObject): each refused key is named in Errors and is still there.
            strip = len(self.prefix) + 1 if self.prefix else 0
            for error in answer.get("Errors", []) or []:
                key = str(error.get("Key", ""))[strip:]
                refused[key] = f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
        if refused:
            raise DeletesRefused(self.url, refused)


@dataclass(frozen=True)
class _Digests:
    size: int
    md5: str
    sha256: str


def _file_digests(path: Path) -> _Digests:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return _Digests(size, md5.hexdigest(), sha.hexdigest())


def open_destination(url: str, settings: Settings) -> Destination:
    if url.startswith("s3://"):
        return S3Destination(url, settings)
    if "://" in url and not url.startswith("file://"):
        raise DestinationError(f"unsupported backup URL {url!r}",
                               hint="use a directory path, file:///path or s3://bucket/prefix")
    return LocalDestination(url.removeprefix("file://"))


def open_destinations(settings: Settings) -> list[Destination]:
    return [open_destination(url, settings) for url in settings.backup_urls]
