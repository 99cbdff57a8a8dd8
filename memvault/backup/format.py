"""The open backup format (docs/backup-format.md): names, manifest, writing and reading files.

A snapshot is a folder (`lineages/<lineage>/snapshots/<seq>-<id>/`, layout.py; format 1 used
`snapshots/<id>/`) holding zstd-compressed JSON lines of memories, one raw little-endian float32
matrix per embedder with its ids, and `manifest.json`, written last. Journal segments are
`lineages/<lineage>/journal/<after_seq>-<upto_seq>.jsonl.zst` (format 1:
`journal/<lineage>/...`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Protocol, TypeVar

import numpy as np

from memvault.backup import jsonlines, layout
from memvault.backup.crypto import Cipher
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupCorrupt, EncryptionKeyError

# The stored files' writers and readers, named here for the modules that write the format.
from memvault.backup.frames import ZSTD_LEVEL as ZSTD_LEVEL
from memvault.backup.frames import FileInfo as FileInfo
from memvault.backup.frames import StagedFile as StagedFile
from memvault.backup.frames import encode_bytes as encode_bytes
from memvault.backup.frames import iter_lines as iter_lines
from memvault.backup.frames import read_plain as read_plain
from memvault.embed import EmbedderIdentity
from memvault.store import MemoryRecord, namespace_key

FORMAT = "memvault-backup"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
# Format 2: the manifest vouches for itself (and, by sha256, for every other file).
MANIFEST_CHECKSUM = "manifest_sha256"
MEMORIES_FILE = "memories.jsonl.zst"
# Raw float32 barely compresses; the fastest level keeps snapshots quick.
VECTORS_ZSTD_LEVEL = 1



class Validity(StrEnum):
    """What a backup proves: the `validation.status` of its manifest, the status of a catalog
    entry and of one destination's backup run (the same words in JSON and metrics labels)."""

    VALID = "valid"  # read back in full and consistent with the store: a restore source
    SUSPICIOUS = "suspicious"  # written, but a check failed: never counted as valid
    INCOMPLETE = "incomplete"  # files without a manifest: a run that did not finish
    UNREADABLE = "unreadable"  # a manifest that cannot be read or parsed
    FAILED = "failed"  # the run left no backup on that destination


VALID = Validity.VALID
SUSPICIOUS = Validity.SUSPICIOUS
INCOMPLETE = Validity.INCOMPLETE
UNREADABLE = Validity.UNREADABLE


class HasValidity(Protocol):
    @property
    def status(self) -> str: ...


T = TypeVar("T", bound=HasValidity)


def not_valid(results: Iterable[T]) -> list[T]:
    """The results (of a backup run, one per destination) that are not a valid backup."""
    return [r for r in results if r.status != Validity.VALID]


def all_valid(results: Sequence[HasValidity]) -> bool:
    """A backup run succeeded: at least one destination, and every one holds a valid backup."""
    return bool(results) and not not_valid(results)


def snapshot_key(folder: str, name: str) -> str:
    """The key of file `name` in the snapshot folder `folder` (as the catalog found it)."""
    return f"{folder.rstrip('/')}/{name}"


def legacy_snapshot_folder(backup_id: str) -> str:
    """Where format 1 kept a snapshot (read only)."""
    return f"{layout.LEGACY_SNAPSHOTS}/{backup_id}/"


def manifest_folder(manifest: Manifest) -> str:
    """Where a snapshot with this manifest is written (format 2) or was written (format 1)."""
    if manifest.format_version >= 2:
        return layout.snapshot_folder(manifest.lineage_id, manifest.seq, manifest.id)
    return legacy_snapshot_folder(manifest.id)


def vector_files(index: int) -> tuple[str, str]:
    return f"vectors-{index}.f32.zst", f"vectors-{index}.ids.zst"


def record_lines(records: Iterable[MemoryRecord]) -> bytes:
    """JSON lines of memories; `namespace` is added for readers (jq) and ignored on restore."""
    out = []
    namespaces: dict[tuple[str | None, ...], bytes] = {}
    for record in records:
        triple = (record.user_id, record.agent_id, record.run_id)
        namespace = namespaces.get(triple)
        if namespace is None:
            namespace = namespaces[triple] = jsonlines.dumps(record.namespace)
        line = jsonlines.dumps(record)  # a dataclass: keys in field order
        out.append(line[:-1] + b',"namespace":' + namespace + b"}")
    out.append(b"")
    return b"\n".join(out)


def manifest_digest(body: dict[str, Any]) -> str:
    """sha256 of the manifest's content in canonical JSON (sorted keys, no spaces): any change
    to a key or value changes it, whatever the file's whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
    # Why it was taken when not on schedule: `pre-<operation>` for a safety snapshot
    # (backup/safety.py). Absent from the JSON when None, so older manifests keep their bytes.
    tag: str | None = None

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
        data = self._body()
        if self.format_version >= 2:
            data[MANIFEST_CHECKSUM] = manifest_digest(data)
        return data

    def _body(self) -> dict[str, Any]:
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
        } | ({"tag": self.tag} if self.tag else {})

    def to_bytes(self) -> bytes:
        """The stored manifest.json (from_bytes checks a stored one is exactly this form)."""
        return json.dumps(self.to_json(), indent=2).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """A stored manifest. A checksummed one must be byte for byte the JSON its content
        serialises to: a changed digit that parses to the same float (the 17th digit of a
        probe vector) changes no value, but is still a damaged file."""
        data = json.loads(raw)
        manifest = cls.from_json(data)
        if MANIFEST_CHECKSUM in data and json.dumps(data, indent=2).encode("utf-8") != raw:
            raise ValueError("its bytes are not the JSON its content serialises to (a changed "
                             "digit or space: the manifest is damaged)")
        return manifest

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a memvault backup manifest (format {data.get('format')!r})")
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ValueError(f"format version {version} is newer than this memvault reads "
                             f"({FORMAT_VERSION}); upgrade memvault")
        if version >= 2 or MANIFEST_CHECKSUM in data:  # a damaged version cannot skip it
            claimed = data.get(MANIFEST_CHECKSUM)
            actual = manifest_digest({k: v for k, v in data.items() if k != MANIFEST_CHECKSUM})
            if claimed != actual:
                raise ValueError(f"its {MANIFEST_CHECKSUM} is {claimed}, its content hashes to "
                                 f"{actual}: the manifest is damaged")
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
            format_version=version, tag=data.get("tag"),
        )


# ---------------------------------------------------------------------------- full read


@dataclass
class SnapshotData:
    rows: list[dict[str, Any]]  # the memories as read (JSON objects)
    vectors: dict[str, tuple[list[str], np.ndarray]]

    @cached_property
    def records(self) -> list[MemoryRecord]:
        out = []
        for row in self.rows:
            fields = {k: v for k, v in row.items() if k != "namespace"}
            try:
                out.append(MemoryRecord(**fields))  # the lines hold exactly the fields
            except TypeError:  # written by another version: take what is known
                out.append(MemoryRecord.from_dict(row))
        return out

    def counts(self) -> dict[str, int]:
        return namespace_counts(self.rows)


def parse_memories(raw: bytes, first_line: int = 1, *, whole: bool = True
                   ) -> list[dict[str, Any]]:
    """All JSON lines in one C-speed parse (lines never hold a raw newline, so they can be
    joined into one array); a fault names the line. `raw` is the whole file (its final
    newline dropped) or, with `whole=False`, complete lines from `first_line` on."""
    body = raw[:-1] if whole and raw.endswith(b"\n") else raw
    try:
        rows = jsonlines.loads_lines(body)
    except jsonlines.LineError as exc:
        where = f"line {exc.line + first_line - 1}"
        raise BackupCorrupt(f"{MEMORIES_FILE} {str(exc).replace(f'line {exc.line}', where, 1)}",
                            file=MEMORIES_FILE) from None
    try:  # every line an object with a string id and text
        bad = next((i for i, r in enumerate(rows)
                    if type(r["id"]) is not str or type(r["memory"]) is not str), None)
    except (TypeError, KeyError, IndexError):
        bad = next(i for i, r in enumerate(rows) if not isinstance(r, dict)
                   or "id" not in r or "memory" not in r)
    if bad is not None:
        raise BackupCorrupt(f"{MEMORIES_FILE} line {bad + first_line} is not a memory",
                            file=MEMORIES_FILE)
    return rows


def iter_memories(chunks: Iterable[bytes], batch_bytes: int = 1 << 22
                  ) -> Iterator[list[dict[str, Any]]]:
    """The memories file's rows in batches of at most about `batch_bytes` of lines as its
    chunks arrive, each checked as parse_memories checks the whole file."""
    pending, first = b"", 1
    for chunk in chunks:
        pending += chunk
        start = 0
        while len(pending) - start >= batch_bytes:
            cut = pending.rfind(b"\n", start, start + batch_bytes)
            if cut < 0:  # one line longer than a batch: it is a batch of its own
                cut = pending.find(b"\n", start + batch_bytes)
                if cut < 0:
                    break
            rows = parse_memories(pending[start:cut], first, whole=False)
            start, first = cut + 1, first + len(rows)
            yield rows
        pending = pending[start:]
    if pending:
        yield parse_memories(pending, first)


@dataclass(frozen=True)
class SnapshotSummary:
    """What validating a snapshot needs of it, read without holding its rows or vectors."""

    counts: dict[str, int]
    ids: set[str]
    vectors: dict[str, list[str]]  # embedder key -> the memory ids of its vectors


def namespace_counts(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Memories per namespace, recomputed from user_id/agent_id/run_id of every line."""
    triples = Counter((r.get("user_id"), r.get("agent_id"), r.get("run_id")) for r in rows)
    counts: Counter[str] = Counter()
    for triple, count in triples.items():
        counts[namespace_key(*triple)] += count
    return dict(sorted(counts.items()))


class _SnapshotFiles:
    """The files of one snapshot, each read with its checksum, size and framing checked."""

    def __init__(self, dest: Destination, manifest: Manifest, cipher: Cipher | None,
                 folder: str | None) -> None:
        _check_encryption(manifest, cipher)
        self.dest, self.manifest, self.cipher = dest, manifest, cipher
        self.where = folder or manifest_folder(manifest)

    def plain(self, name: str) -> Iterator[bytes]:
        info = self.manifest.files.get(name)
        if info is None:
            raise BackupCorrupt(f"the manifest of {self.manifest.id} does not list {name}",
                                file=name)
        key = snapshot_key(self.where, name)
        return read_plain(self.dest.iter_chunks(key), key, self.cipher, info,
                          self.manifest.encrypted, name,
                          require_checksum=self.manifest.format_version >= 2)

    def vectors(self, entry: EmbedderEntry, keep: bool) -> tuple[list[str], np.ndarray]:
        raw = b""
        if keep:
            raw = b"".join(self.plain(entry.vectors_file))
            size = len(raw)
        else:
            size = sum(len(chunk) for chunk in self.plain(entry.vectors_file))
        if size != entry.count * entry.dims * 4:
            raise BackupCorrupt(f"{entry.vectors_file} holds {size} bytes, expected "
                                f"{entry.count} x {entry.dims} float32", file=entry.vectors_file)
        ids = b"".join(self.plain(entry.ids_file)).decode("utf-8").split("\n")
        ids = [i for i in ids if i]
        if len(ids) != entry.count:
            raise BackupCorrupt(f"{entry.ids_file} lists {len(ids)} ids, expected {entry.count}",
                                file=entry.ids_file)
        return ids, np.frombuffer(raw, dtype="<f4").reshape(-1, entry.dims)

    def check_counts(self, counts: dict[str, int], rows: int) -> None:
        if counts != self.manifest.counts:
            raise BackupCorrupt(f"{MEMORIES_FILE} holds {rows} memories whose counts per "
                                "namespace differ from the manifest's", file=MEMORIES_FILE)


def read_snapshot(dest: Destination, manifest: Manifest, cipher: Cipher | None,
                  load_vectors: bool = True, *, folder: str | None = None) -> SnapshotData:
    """Read every file of a snapshot, checking checksums, sizes, framing, shapes and counts
    against the manifest. Raises BackupCorrupt naming the file and the fault. Without
    `load_vectors` the vectors are read and checked but not kept. `folder` is where the
    catalog found the snapshot (default: where its manifest says it is written)."""
    files = _SnapshotFiles(dest, manifest, cipher, folder)
    # Vector files (decompression and hashing release the GIL) are read in a second thread
    # while this one parses the memories.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-read") as pool:
        futures = [(entry.key, pool.submit(files.vectors, entry, load_vectors))
                   for entry in manifest.embedders]
        try:
            data = SnapshotData(parse_memories(b"".join(files.plain(MEMORIES_FILE))), {})
            files.check_counts(data.counts(), len(data.rows))
            for key, future in futures:
                data.vectors[key] = future.result()
        finally:
            for _, future in futures:
                future.cancel()
    return data


def check_snapshot(dest: Destination, manifest: Manifest, cipher: Cipher | None, *,
                   folder: str | None = None, batch_bytes: int = 1 << 22) -> SnapshotSummary:
    """Every check of read_snapshot, with the memories read as a stream and nothing kept but
    their ids and counts: validating a backup of a million memories holds its ids (~100 MB),
    not its rows (~2.5 GB as Python objects)."""
    files = _SnapshotFiles(dest, manifest, cipher, folder)
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    for rows in iter_memories(files.plain(MEMORIES_FILE), batch_bytes):
        counts.update(namespace_counts(rows))
        ids.update(row["id"] for row in rows)
    files.check_counts(dict(sorted(counts.items())), sum(counts.values()))
    vectors = {entry.key: files.vectors(entry, False)[0] for entry in manifest.embedders}
    return SnapshotSummary(dict(sorted(counts.items())), ids, vectors)


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
