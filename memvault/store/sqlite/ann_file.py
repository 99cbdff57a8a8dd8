"""The on-disk form of a SQLite store's approximate vector index, and the rule for trusting it.

One index per embedder sits next to the database as four files sharing a stem
(`<db>.vindex-<embedder digest>`): `.hnsw` (a usearch HNSW graph with int8 vectors, memory-mapped
when served), `.ids.npy` (the memory id of each graph key), `.ns.npy` (the namespace number of
each key) and `.json`, the header: which store, embedder, vectors version and journal seq the
index reflects, and the size and checksum of the three others. The header is renamed into place
last, after the data files are fsynced, so a crash at any point leaves either the old complete
set or files whose header does not match them: never an index that is trusted but wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
DATA_PARTS = ("hnsw", "ids.npy", "ns.npy")
_CHUNK = 1 << 22

Triple = tuple[str | None, str | None, str | None]


@dataclass(frozen=True)
class AnnHeader:
    """What one persisted index reflects; every field is compared with the store at open."""

    store_id: str
    embedder_key: str
    vectors_version: Any
    seq: int  # the journal seq the index was built at
    seq_ts: str | None  # the journal row at `seq` (its ts): a rewritten history does not match
    count: int
    dims: int
    namespaces: list[list[str | None]]
    namespace_counts: list[int]
    files: dict[str, list[int | str]] = field(default_factory=dict)  # part -> [size, checksum]
    format: int = FORMAT


@dataclass(frozen=True)
class StoreState:
    """What the store says now, for `check`."""

    store_id: str
    embedder_key: str
    vectors_version: Any
    seq: int
    seq_ts: str | None  # the journal row at the header's seq, read from the store


def stem_for(db_path: Path, embedder_key: str) -> Path:
    digest = hashlib.sha256(embedder_key.encode()).hexdigest()[:12]
    return db_path.with_name(f"{db_path.name}.vindex-{digest}")


def part_path(stem: Path, part: str) -> Path:
    return stem.with_name(f"{stem.name}.{part}")


def checksum(path: Path) -> str:
    """A digest of the file, read once at memory speed (~1.3 GB/s here, twice crc32's).

    Each 4 MiB chunk is summed as 64-bit words (a flipped bit changes its chunk's sum) and the
    sums with the tail go through blake2b, which makes the digest depend on the chunks' order.
    """
    digest = hashlib.blake2b(digest_size=16)
    buffer = bytearray(_CHUNK)
    with path.open("rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            words = read // 8
            total = np.frombuffer(buffer, dtype=np.uint64, count=words).sum(dtype=np.uint64)
            digest.update(int(total).to_bytes(8, "little"))
            digest.update(bytes(buffer[words * 8 : read]))
            digest.update(read.to_bytes(4, "little"))
    return digest.hexdigest()


def read_header(stem: Path) -> AnnHeader | None:
    """The header, or None when it is missing or unreadable (the index is rebuilt)."""
    try:
        raw = json.loads(part_path(stem, "json").read_text())
        header = AnnHeader(**raw)
    except (OSError, ValueError, TypeError):
        return None
    return header if header.format == FORMAT else None


def check(stem: Path, header: AnnHeader, state: StoreState) -> str | None:
    """Why the files at `stem` must not be served for `state`, or None when they may be."""
    if header.store_id != state.store_id:
        return "it belongs to another store"
    if header.embedder_key != state.embedder_key:
        return "it holds another embedder's vectors"
    if header.vectors_version != state.vectors_version:
        return "the vectors were rewritten since it was built"
    if header.seq > state.seq or header.seq_ts != state.seq_ts:
        return f"it reflects journal seq {header.seq}, which this store's journal does not have"
    for part in DATA_PARTS:
        path = part_path(stem, part)
        expected = header.files.get(part)
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path.name} is missing"
        if expected is None or size != expected[0]:
            return f"{path.name} is truncated or resized ({size} bytes, header says {expected})"
        if checksum(path) != expected[1]:
            return f"{path.name} does not match its checksum (corrupt)"
    return None


@contextmanager
def staging(stem: Path) -> Iterator[dict[str, Path]]:
    """Temporary paths for a new index's parts; removed if the build does not commit."""
    token = f"tmp{os.getpid()}-{os.urandom(4).hex()}"
    paths = {part: stem.with_name(f"{stem.name}.{token}.{part}") for part in (*DATA_PARTS, "json")}
    try:
        yield paths
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)


def commit(stem: Path, staged: dict[str, Path], header: AnnHeader) -> AnnHeader:
    """fsync the staged data parts, rename them into place, then the header last."""
    files: dict[str, list[int | str]] = {}
    for part in DATA_PARTS:
        path = staged[part]
        _fsync(path)
        files[part] = [path.stat().st_size, checksum(path)]
    header = AnnHeader(**{**asdict(header), "files": files})
    staged["json"].write_text(json.dumps(asdict(header)))
    _fsync(staged["json"])
    for part in (*DATA_PARTS, "json"):
        os.replace(staged[part], part_path(stem, part))
    dir_fd = os.open(stem.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return header


def remove_stale_temps(stem: Path) -> None:
    """Delete the staged parts that a killed build left behind (their pid is gone)."""
    for path in stem.parent.glob(f"{stem.name}.tmp*"):
        pid_part = path.name[len(stem.name) + 4 :].split("-", 1)[0]
        if pid_part.isdigit() and not _alive(int(pid_part)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
