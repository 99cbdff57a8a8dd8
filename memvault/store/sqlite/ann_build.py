"""Building a SQLite store's approximate vector index from one read snapshot of the file.

The build reads on its own connection inside one read transaction (WAL keeps writers going and
the rows, seq and vectors version consistent), streams the vectors into a usearch HNSW graph
and commits the files through `ann_file` (staged, fsynced, header renamed last). One build at a
time per index: an exclusive lock file makes a second process wait, then find the first one's
index already in place.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from memvault.errors import StoreUnavailable
from memvault.progress import NoProgress, Progress
from memvault.store.sqlite.ann_file import AnnHeader, Triple, commit, remove_stale_temps, staging

log = logging.getLogger("memvault.store.sqlite")

# HNSW shape, measured on 200k real-text vectors (BENCHMARKS.md "A million memories"):
# int8 vectors halve the file and the build against f16 at the same recall once the candidates
# are re-scored with the stored float32 vectors; expansion_add 64 builds 1.6x faster than 128
# for 0.003 less recall@10.
CONNECTIVITY = 16
EXPANSION_ADD = 64
QUANTIZATION = "i8"
_BATCH = 20_000


def usearch_index() -> Any:
    """usearch's Index class. onnxruntime is imported first: loading usearch's native library
    before onnxruntime's makes onnxruntime's initialisation crash the process (SIGSEGV with
    usearch 2.26.6 and onnxruntime 1.32), and the bundled embedder may load after a search."""
    import onnxruntime  # noqa: F401
    from usearch.index import Index

    return Index


@contextmanager
def build_lock(stem: Path) -> Iterator[None]:
    with stem.with_name(f"{stem.name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("vector index %s: another process is building it; waiting for it",
                     stem.name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(db_path: Path, stem: Path, embedder_key: str, dims: int,
          progress: Progress | None = None) -> AnnHeader:
    """Write a fresh index for `embedder_key` at `stem`; returns its committed header."""
    Index = usearch_index()

    progress = progress or NoProgress()
    remove_stale_temps(stem)
    started = time.perf_counter()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot: rows, seq and versions agree
        store_id = json.loads(conn.execute(
            "SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])
        version_row = conn.execute("SELECT value FROM meta WHERE key = ?",
                                   (f"vectors_version:{embedder_key}",)).fetchone()
        seq_row = conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
        seq = seq_row[0] if seq_row else 0
        ts_row = conn.execute("SELECT ts FROM journal WHERE seq = ?", (seq,)).fetchone()
        count = conn.execute("SELECT COUNT(*) FROM vectors WHERE embedder_key = ?",
                             (embedder_key,)).fetchone()[0]
        graph = Index(ndim=dims, metric="cos", dtype=QUANTIZATION, connectivity=CONNECTIVITY,
                      expansion_add=EXPANSION_ADD)
        ids: list[str] = []
        codes = np.empty(count, dtype=np.int32)
        namespaces: dict[Triple, int] = {}
        advance = progress.task("building the vector index", count)
        cursor = conn.execute(
            "SELECT v.memory_id, m.user_id, m.agent_id, m.run_id, v.vector FROM vectors v "
            "JOIN memories m ON m.id = v.memory_id WHERE v.embedder_key = ?", (embedder_key,))
        while rows := cursor.fetchmany(_BATCH):
            start = len(ids)
            matrix = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32)
            graph.add(np.arange(start, start + len(rows), dtype=np.uint64),
                      matrix.reshape(len(rows), dims), threads=os.cpu_count() or 1)
            for offset, row in enumerate(rows):
                codes[start + offset] = namespaces.setdefault(row[1:4], len(namespaces))
            ids.extend(r[0] for r in rows)
            advance(len(rows))
            log.info("vector index %s: %d/%d vectors", stem.name, len(ids), count)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot read {db_path} to build its vector index: {exc}",
                               hint="check the file is readable; the search retries") from exc
    finally:
        conn.close()
    advance(0)  # a last word before anything is written: a cancelled build stops here
    counts = np.bincount(codes[: len(ids)], minlength=len(namespaces))
    header = AnnHeader(
        store_id=store_id, embedder_key=embedder_key,
        vectors_version=version_row[0] if version_row else None,  # as sync_state reads it
        seq=seq, seq_ts=ts_row[0] if ts_row else None, count=len(ids), dims=dims,
        namespaces=[list(t) for t in namespaces], namespace_counts=counts.tolist())
    with staging(stem) as staged:
        graph.save(str(staged["hnsw"]))
        width = max((len(i.encode()) for i in ids), default=1)
        with staged["ids.npy"].open("wb") as handle:
            np.save(handle, np.array([i.encode() for i in ids], dtype=f"S{width}"))
        with staged["ns.npy"].open("wb") as handle:
            np.save(handle, codes[: len(ids)])
        header = commit(stem, staged, header)
    log.info("vector index %s: %d vectors built in %.1f s", stem.name, len(ids),
             time.perf_counter() - started)
    return header
