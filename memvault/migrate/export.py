"""`memvault export`: every memory as one JSON object per line, from one consistent snapshot.

Line 1 is a header `{"memvault_export": {...}}` (store, seq, filters, and with vectors the
embedder's full identity including its probe vectors, so an import can prove the vectors are
its model's); the last line `{"memvault_export_end": {"count": N, "counts": {...}}}` lets
`memvault import jsonl` detect a truncated file. Written to FILE.partial and renamed, so FILE
is never half-written.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import orjson

from memvault.migrate.rows import MigrationError
from memvault.migrate.sources import EXPORT_HEADER, EXPORT_TRAILER, EXPORT_VERSION
from memvault.progress import NoProgress, Progress
from memvault.store import MemoryRecord, utc_now

if TYPE_CHECKING:
    from memvault.store import Store

FIELDS = ("id", "memory", "hash", "metadata", "user_id", "agent_id", "run_id", "actor_id",
          "role", "created_at", "updated_at", "expiration_date", "memory_type")


@dataclass
class ExportFilter:
    user_ids: list[str] = field(default_factory=list)
    agent_ids: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def matches(self, record: MemoryRecord) -> bool:
        return ((not self.user_ids or record.user_id in self.user_ids)
                and (not self.agent_ids or record.agent_id in self.agent_ids)
                and (not self.run_ids or record.run_id in self.run_ids))

    def to_json(self) -> dict[str, list[str]]:
        return {k: v for k, v in (("user_id", self.user_ids), ("agent_id", self.agent_ids),
                                  ("run_id", self.run_ids)) if v}


@dataclass
class ExportReport:
    out: str
    count: int
    counts: dict[str, int]
    seq: int
    embedder: str | None
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"out": self.out, "count": self.count, "counts": self.counts, "seq": self.seq,
                "with_vectors_of": self.embedder, "bytes": self.bytes}


@contextmanager
def _target(out: Path | None) -> Iterator[tuple[IO[bytes], list[int]]]:
    """A binary sink (zstd when the name ends in .zst); the file appears only when complete."""
    written = [0]
    if out is None:
        yield sys.stdout.buffer, written
        sys.stdout.buffer.flush()
        return
    partial = out.with_name(out.name + ".partial")
    try:
        raw = partial.open("wb")
    except OSError as exc:
        raise MigrationError(f"cannot write {out}: {exc}", hint="choose a writable --out") \
            from None
    try:
        if out.name.endswith(".zst"):
            import zstandard

            with zstandard.ZstdCompressor(level=6).stream_writer(raw, closefd=False) as zst:
                yield zst, written  # type: ignore[misc]
        else:
            yield raw, written
        raw.flush()
        os.fsync(raw.fileno())
        raw.close()
        os.replace(partial, out)
    except BaseException:
        raw.close()
        partial.unlink(missing_ok=True)
        raise


def export_jsonl(store: Store, out: Path | None, *, filters: ExportFilter | None = None,
                 with_vectors: bool = False, progress: Progress | None = None) -> ExportReport:
    filters = filters or ExportFilter()
    progress = progress or NoProgress()
    meta = store.meta()
    key = meta.active_embedder if with_vectors else None
    if with_vectors and key is None:
        raise MigrationError("--with-vectors: the store has no active embedder (it is empty or "
                             "has never been written)", hint="export without --with-vectors")
    identity = store.embedders().get(key) if key else None
    counts: Counter[str] = Counter()
    with store.snapshot() as snap, _target(out) as (sink, written):
        header = {"version": EXPORT_VERSION, "store_id": meta.store_id,
                  "lineage_id": meta.lineage_id, "backend": meta.backend, "seq": snap.seq,
                  "exported_at": utc_now(), "filters": filters.to_json(),
                  "embedder": identity.to_json() if identity else None}

        def emit(item: dict[str, Any]) -> None:
            data = orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
            sink.write(data)
            written[0] += len(data)

        emit({EXPORT_HEADER: header})
        advance = progress.task("exporting", sum(snap.counts().values()))
        vectors = _vector_stream(snap, key) if key else None
        pending: tuple[str, np.ndarray] | None = None
        for batch in snap.iter_records():
            for record in batch:
                item = {name: getattr(record, name) for name in FIELDS}
                if vectors is not None:
                    # both streams are ordered by id: a merge join, nothing held in memory
                    while pending is None or pending[0] < record.id:
                        pending = next(vectors, (chr(0x10FFFF), np.zeros(0)))
                    vector = pending[1] if pending[0] == record.id else None
                    item["embedder"] = key
                    item["vector"] = vector.astype(np.float32) if vector is not None else None
                if filters.matches(record):
                    emit(item)
                    counts[record.namespace] += 1
            advance(len(batch))
        total = sum(counts.values())
        emit({EXPORT_TRAILER: {"count": total, "counts": dict(sorted(counts.items()))}})
    return ExportReport(str(out) if out else "-", total, dict(sorted(counts.items())),
                        int(header["seq"]), key, written[0])


def _vector_stream(snap: Any, key: str) -> Iterator[tuple[str, np.ndarray]]:
    for ids, matrix in snap.iter_vectors(key):
        yield from zip(ids, matrix, strict=True)
