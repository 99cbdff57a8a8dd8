"""The open backup format (docs/backup-format.md): names, manifest, writing and reading files.

A snapshot is a folder `snapshots/<id>/` holding zstd-compressed JSON lines of memories, one
raw little-endian float32 matrix per embedder with its ids, and `manifest.json`, written last.
Journal segments are `journal/<lineage_id>/<after_seq>-<upto_seq>.jsonl.zst`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from memvault.backup.crypto import Cipher, EncryptingWriter
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupCorrupt, EncryptionKeyError
from memvault.embed.base import EmbedderIdentity
from memvault.store.records import MemoryRecord, namespace_key

FORMAT = "memvault-backup"
FORMAT_VERSION = 1
SNAPSHOTS = "snapshots"
JOURNAL = "journal"
MANIFEST = "manifest.json"
MEMORIES_FILE = "memories.jsonl.zst"
ZSTD_LEVEL = 3
# Raw float32 barely compresses; the fastest level keeps snapshots quick.
VECTORS_ZSTD_LEVEL = 1
SEGMENT_RE = re.compile(r"^(\d{16})-(\d{16})\.jsonl\.zst$")

VALID = "valid"
SUSPICIOUS = "suspicious"
INCOMPLETE = "incomplete"
UNREADABLE = "unreadable"


def snapshot_key(backup_id: str, name: str) -> str:
    return f"{SNAPSHOTS}/{backup_id}/{name}"


def segment_key(lineage_id: str, after_seq: int, upto_seq: int) -> str:
    return f"{JOURNAL}/{lineage_id}/{after_seq:016d}-{upto_seq:016d}.jsonl.zst"


def vector_files(index: int) -> tuple[str, str]:
    return f"vectors-{index}.f32.zst", f"vectors-{index}.ids.zst"


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
        self._handle.close()


@dataclass
class FileInfo:
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


class StagedFile:
    """zstd -> (AES-GCM) -> local file, with size and sha256 of what is stored."""

    def __init__(self, path: Path, cipher: Cipher | None, level: int = ZSTD_LEVEL) -> None:
        self.path = path
        self._raw = _HashingFile(path)
        self._sealer: EncryptingWriter | None = cipher.writer(self._raw) if cipher else None
        sink: Any = self._sealer or self._raw
        self._zstd = zstandard.ZstdCompressor(level=level).stream_writer(
            sink, closefd=False, write_return_read=True)

    def write(self, data: bytes) -> None:
        self._zstd.write(data)

    def close(self) -> FileInfo:
        self._zstd.flush(zstandard.FLUSH_FRAME)
        self._zstd.close()
        if self._sealer is not None:
            self._sealer.close()
        self._raw.close()
        return FileInfo(self._raw.size, self._raw.sha.hexdigest())


def encode_bytes(data: bytes, cipher: Cipher | None, level: int = ZSTD_LEVEL) -> bytes:
    compressed = zstandard.ZstdCompressor(level=level).compress(data)
    return cipher.seal(compressed) if cipher else compressed


def record_line(record: MemoryRecord) -> bytes:
    data = dict(vars(record))
    data["namespace"] = record.namespace
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


# ---------------------------------------------------------------------------- reading


def read_plain(source: Iterable[bytes], key: str, cipher: Cipher | None,
               expected: FileInfo | None, encrypted: bool, file: str | None = None
               ) -> Iterator[bytes]:
    """Decompressed bytes of a stored file, checking size, sha256, tags and the zstd frame.

    Checksum faults are raised at the end of the stream, so callers must not commit what they
    read before the generator is exhausted. Faults name `file` (default: the key).
    """
    try:
        yield from _read_plain(source, key, cipher, expected, encrypted)
    except BackupCorrupt as exc:
        exc.file = file or key
        raise


def _read_plain(source: Iterable[bytes], key: str, cipher: Cipher | None,
                expected: FileInfo | None, encrypted: bool) -> Iterator[bytes]:
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
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        for chunk in chunks:
            out = decompressor.decompress(chunk)
            if out:
                yield out
    except zstandard.ZstdError as exc:
        _check_stored(key, expected, size, sha)
        raise BackupCorrupt(f"{key} is not valid zstd data: {exc}", file=key) from None
    _check_stored(key, expected, size, sha)
    if not decompressor.eof:
        raise BackupCorrupt(f"{key} is truncated: the zstd frame is incomplete", file=key)


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


# ---------------------------------------------------------------------------- manifest


@dataclass
class EmbedderEntry:
    key: str
    identity: dict[str, Any]
    count: int
    dims: int
    vectors_file: str
    ids_file: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Manifest:
    id: str
    store_id: str
    lineage_id: str
    backend: str
    seq: int
    created_at: str
    completed_at: str
    memvault_version: str
    counts: dict[str, int]
    active_embedder: str | None
    embedders: list[EmbedderEntry]
    files: dict[str, FileInfo]
    encryption: dict[str, Any] | None
    validation: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> str:
        return str(self.validation.get("status", SUSPICIOUS))

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    def identity(self, key: str) -> EmbedderIdentity:
        entry = next(e for e in self.embedders if e.key == key)
        return EmbedderIdentity.from_json(entry.identity)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "id": self.id,
            "memvault_version": self.memvault_version,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "store": {"store_id": self.store_id, "lineage_id": self.lineage_id,
                      "backend": self.backend, "active_embedder": self.active_embedder},
            "seq": self.seq,
            "total": self.total,
            "counts": self.counts,
            "embedders": [e.to_json() for e in self.embedders],
            "files": {name: info.to_json() for name, info in self.files.items()},
            "encryption": self.encryption,
            "validation": self.validation,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a memvault backup manifest (format {data.get('format')!r})")
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ValueError(f"format version {version} is newer than this memvault reads "
                             f"({FORMAT_VERSION}); upgrade memvault")
        store = data["store"]
        return cls(
            id=data["id"], store_id=store["store_id"], lineage_id=store["lineage_id"],
            backend=store.get("backend", "?"), seq=int(data["seq"]),
            created_at=data["created_at"], completed_at=data.get("completed_at", ""),
            memvault_version=data.get("memvault_version", "?"),
            counts={k: int(v) for k, v in data["counts"].items()},
            active_embedder=store.get("active_embedder"),
            embedders=[EmbedderEntry(**e) for e in data.get("embedders", [])],
            files={n: FileInfo(int(f["size"]), f["sha256"]) for n, f in data["files"].items()},
            encryption=data.get("encryption"), validation=data.get("validation") or {},
            format_version=version,
        )


# ---------------------------------------------------------------------------- full read


@dataclass
class SnapshotData:
    records: list[MemoryRecord]
    vectors: dict[str, tuple[list[str], np.ndarray]]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records:
            key = namespace_key(record.user_id, record.agent_id, record.run_id)
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))


def read_snapshot(dest: Destination, manifest: Manifest, cipher: Cipher | None) -> SnapshotData:
    """Read every file of a snapshot, checking checksums, sizes, framing, shapes and counts
    against the manifest. Raises BackupCorrupt naming the file and the fault."""
    _check_encryption(manifest, cipher)

    def plain(name: str) -> Iterator[bytes]:
        info = manifest.files.get(name)
        if info is None:
            raise BackupCorrupt(f"the manifest of {manifest.id} does not list {name}", file=name)
        key = snapshot_key(manifest.id, name)
        return read_plain(dest.iter_chunks(key), key, cipher, info, manifest.encrypted, name)

    records: list[MemoryRecord] = []
    for number, line in enumerate(iter_lines(plain(MEMORIES_FILE)), 1):
        try:
            records.append(MemoryRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise BackupCorrupt(f"{MEMORIES_FILE} line {number} is not a memory: {exc}",
                                file=MEMORIES_FILE) from None
    data = SnapshotData(records, {})
    if data.counts() != manifest.counts:
        raise BackupCorrupt(f"{MEMORIES_FILE} holds {len(records)} memories whose counts per "
                            f"namespace differ from the manifest's", file=MEMORIES_FILE)
    for entry in manifest.embedders:
        raw = b"".join(plain(entry.vectors_file))
        if len(raw) != entry.count * entry.dims * 4:
            raise BackupCorrupt(f"{entry.vectors_file} holds {len(raw)} bytes, expected "
                                f"{entry.count} x {entry.dims} float32", file=entry.vectors_file)
        ids = b"".join(plain(entry.ids_file)).decode("utf-8").split("\n")
        ids = [i for i in ids if i]
        if len(ids) != entry.count:
            raise BackupCorrupt(f"{entry.ids_file} lists {len(ids)} ids, expected {entry.count}",
                                file=entry.ids_file)
        matrix = np.frombuffer(raw, dtype="<f4").reshape(entry.count, entry.dims)
        data.vectors[entry.key] = (ids, matrix)
    return data


def _check_encryption(manifest: Manifest, cipher: Cipher | None) -> None:
    if not manifest.encrypted:
        return
    wanted = manifest.encryption.get("key_id") if manifest.encryption else None
    if cipher is None:
        raise EncryptionKeyError(
            f"backup {manifest.id} is encrypted (key id {wanted}) and no key is configured",
            hint="set MEMVAULT_BACKUP_ENCRYPTION_KEY to the key it was written with")
    if wanted != cipher.key_fingerprint:
        raise EncryptionKeyError(
            f"backup {manifest.id} was encrypted with another key (key id {wanted}, configured "
            f"key id {cipher.key_fingerprint})",
            hint="set MEMVAULT_BACKUP_ENCRYPTION_KEY to the key it was written with")
