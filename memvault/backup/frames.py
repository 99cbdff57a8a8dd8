"""Stored files of a backup: zstd frames (with content checksums), optionally sealed with
AES-GCM, counted and hashed as they are written and checked as they are read.

Every frame written carries a zstd content checksum, so a file is verifiable on its own; the
reader refuses data after the last frame and (for files written with checksums) a frame that
lost its checksum flag, so a single flipped bit cannot pass as a shorter valid file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from memvault.backup.crypto import Cipher, EncryptingWriter
from memvault.backup.errors import BackupCorrupt, EncryptionKeyError

ZSTD_LEVEL = 3
# A zstd frame header is at most 18 bytes: enough to read its flags before decoding it.
FRAME_HEADER_MAX = 18


# ---------------------------------------------------------------------------- writing


class _HashingFile:
    """The stored bytes: counted and hashed on their way to disk."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._handle.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        if self._handle.closed:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())  # it may be published by a hard link, not a copy
        finally:
            self._handle.close()


@dataclass
class FileInfo:
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


def compressor(level: int = ZSTD_LEVEL) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=level, write_checksum=True)


class StagedFile:
    """zstd -> (AES-GCM) -> local file, with size and sha256 of what is stored.

    Compression, encryption, hashing and writing run in a worker thread (they release the GIL),
    so they overlap with the caller reading the store and encoding the next batch.
    """

    def __init__(self, path: Path, cipher: Cipher | None, level: int = ZSTD_LEVEL) -> None:
        self.path = path
        self._raw = _HashingFile(path)
        self._sealer: EncryptingWriter | None = cipher.writer(self._raw) if cipher else None
        sink: Any = self._sealer or self._raw
        self._zstd = compressor(level).stream_writer(sink, closefd=False,
                                                     write_return_read=True)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._drain, name="backup-writer", daemon=True)
        self._worker.start()

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._zstd.write(data)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def abort(self) -> None:
        """Stop the worker and close the file after a failure (the caller deletes it)."""
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()
        with contextlib.suppress(Exception):
            self._raw.close()

    def close(self) -> FileInfo:
        self._queue.put(None)
        self._worker.join()
        if self._error is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            raise self._error
        self._zstd.close()  # ends the one frame (an explicit flush first would add an empty one)
        if self._sealer is not None:
            self._sealer.close()
        self._raw.close()
        return FileInfo(self._raw.size, self._raw.sha.hexdigest())


def encode_bytes(data: bytes, cipher: Cipher | None, level: int = ZSTD_LEVEL) -> bytes:
    compressed = compressor(level).compress(data)
    return cipher.seal(compressed) if cipher else compressed


# ---------------------------------------------------------------------------- reading


def read_plain(source: Iterable[bytes], key: str, cipher: Cipher | None,
               expected: FileInfo | None, encrypted: bool, file: str | None = None,
               *, require_checksum: bool = False) -> Iterator[bytes]:
    """Decompressed bytes of a stored file, checking size, sha256, tags and every zstd frame
    (content checksums; with `require_checksum` a frame without one is a fault).

    Checksum faults are raised at the end of the stream, so callers must not commit what they
    read before the generator is exhausted. Faults name `file` (default: the key).
    """
    try:
        yield from _read_plain(source, key, cipher, expected, encrypted, require_checksum)
    except BackupCorrupt as exc:
        exc.file = file or key
        raise


def _read_plain(source: Iterable[bytes], key: str, cipher: Cipher | None,
                expected: FileInfo | None, encrypted: bool, require_checksum: bool
                ) -> Iterator[bytes]:
    sha = hashlib.sha256()
    size = 0

    def stored() -> Iterator[bytes]:
        nonlocal size
        for chunk in source:
            sha.update(chunk)
            size += len(chunk)
            yield chunk

    if encrypted and cipher is None:
        raise EncryptionKeyError(f"{key} is encrypted and no key is configured",
                                 hint="set MEMVAULT_BACKUP_ENCRYPTION_KEY to the backup's key")
    chunks: Iterable[bytes] = cipher.open_chunks(stored(), key) if encrypted and cipher \
        else stored()
    try:
        yield from _frames(chunks, key, require_checksum)
    except EncryptionKeyError as exc:
        if expected is None:
            raise
        # The manifest names the configured key (checked before any file is read), so a file
        # whose header names another one is damaged.
        raise BackupCorrupt(f"{key} is damaged: {exc.message}, although its manifest names "
                            "the configured key", file=key) from None
    except zstandard.ZstdError as exc:
        _check_stored(key, expected, size, sha)
        raise BackupCorrupt(f"{key} is not valid zstd data: {exc}", file=key) from None
    except BackupCorrupt:
        _check_stored(key, expected, size, sha)
        raise
    _check_stored(key, expected, size, sha)


def _frames(chunks: Iterable[bytes], key: str, require_checksum: bool) -> Iterator[bytes]:
    """Decode one or more whole zstd frames (format 1 files end with an empty second frame);
    anything after the last frame, or a frame cut short, is a fault."""
    decompressor: Any = None
    head = b""  # the start of a frame whose header was not checked yet
    frames = 0
    for chunk in _slices(chunks):
        data = chunk
        while data:
            if decompressor is None:
                head += data
                if len(head) < FRAME_HEADER_MAX:
                    break
                decompressor = _open_frame(head, key, require_checksum)
                data, head = head, b""
            out = decompressor.decompress(data)
            if out:
                yield out
            if not decompressor.eof:
                break
            data, decompressor = decompressor.unused_data, None
            frames += 1
    if head:  # a last frame shorter than a full header (an empty frame)
        decompressor = _open_frame(head, key, require_checksum)
        out = decompressor.decompress(head)
        if out:
            yield out
        frames += decompressor.eof
    if decompressor is not None and not decompressor.eof:
        raise BackupCorrupt(f"{key} is truncated: the zstd frame is incomplete", file=key)
    if frames == 0:
        raise BackupCorrupt(f"{key} holds no zstd frame (empty or truncated)", file=key)


def _slices(chunks: Iterable[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    """`chunks` cut to at most `size` bytes: zstd turns each input into all the output it
    holds at once, so a stored chunk of megabytes would become ten times that in memory."""
    for chunk in chunks:
        if len(chunk) <= size:
            yield chunk
        else:
            view = memoryview(chunk)
            for start in range(0, len(chunk), size):
                yield bytes(view[start : start + size])


def _open_frame(head: bytes, key: str, require_checksum: bool) -> Any:
    try:
        params = zstandard.get_frame_parameters(head)
    except zstandard.ZstdError as exc:
        raise BackupCorrupt(f"{key} holds data that is not a zstd frame ({exc}): damaged or "
                            "extra bytes", file=key) from None
    if require_checksum and not params.has_checksum:
        raise BackupCorrupt(f"{key} has a zstd frame without its content checksum (every "
                            "frame of this format carries one): the file is damaged", file=key)
    return zstandard.ZstdDecompressor().decompressobj()


def _check_stored(key: str, expected: FileInfo | None, size: int, sha: Any) -> None:
    if expected is None:
        return
    if size != expected.size:
        raise BackupCorrupt(f"{key} has {size} bytes, the manifest says {expected.size} "
                            "(truncated or damaged)", file=key)
    digest = sha.hexdigest()
    if digest != expected.sha256:
        raise BackupCorrupt(f"{key} sha256 is {digest}, the manifest says {expected.sha256} "
                            "(the file is damaged)", file=key)


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from (line for line in lines if line)
    if rest:
        yield rest
