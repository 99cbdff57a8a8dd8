"""Approximate vector search for a SQLite store above a size threshold.

Served from the memory-mapped files of `ann_file` (a start maps them instead of loading every
vector), plus an exact in-memory `VectorIndex` of the memories the journal changed since the
index was built (the overlay). Candidates from the graph are re-scored with the float32 vectors
read back from the store, so scores are exact and deleted memories drop out; the overlay is
searched exactly and wins for the memories it holds. Filters stay exact: a filter that leaves
few rows is searched exactly, a wider one post-filters more candidates and falls back to exact
search when too few survive.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from memvault.errors import StoreError, StoreUnavailable
from memvault.progress import Progress
from memvault.store.records import ENTITY_KEYS, JournalEntry
from memvault.store.sqlite.ann_build import build, build_lock, usearch_index
from memvault.store.sqlite.ann_file import (
    AnnHeader,
    StoreState,
    check,
    part_path,
    read_header,
    stem_for,
)
from memvault.store.sqlite.index_sync import CATCH_UP_LIMIT, catch_up, sync_state
from memvault.store.vector_index import VectorIndex

log = logging.getLogger("memvault.store.sqlite")

Journal = Callable[[int, int], list[JournalEntry]]  # (after_seq, limit) -> entries

# 64 candidates at ef 256, re-scored, gave recall@10 0.99 at 200k real-text vectors but 0.966 at
# 1M (BENCHMARKS.md "A million memories"): twice the candidates, 1.5x the breadth.
EXPANSION_SEARCH = 384
CANDIDATES = 128
MAX_CANDIDATES = 4096  # beyond this a filtered search is cheaper done exactly
EXACT_ROWS = 20_000  # a filter leaving at most this many rows is searched exactly
CACHED_ROWS = 50_000  # vectors of small namespaces kept in memory (~75 MB at 384 dims)
# Changes since the build kept in the overlay before the index is rebuilt.
REBUILD_MIN_CHANGES = 50_000
REBUILD_FRACTION = 0.05
_CHUNK = 500


def store_state(conn: sqlite3.Connection, embedder_key: str, header_seq: int) -> StoreState:
    seq, version = sync_state(conn, embedder_key)
    store_id = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    ts = conn.execute("SELECT ts FROM journal WHERE seq = ?", (header_seq,)).fetchone()
    return StoreState(store_id=json.loads(store_id[0]) if store_id else "",
                      embedder_key=embedder_key, vectors_version=version, seq=seq,
                      seq_ts=ts[0] if ts else None)


def keep_up(current: AnnIndex | None, conn: sqlite3.Connection, db_path: Path, embedder_key: str,
            dims: Callable[[], int | None], threshold: int | None, loaded: int | None,
            progress: Progress | None, journal: Journal) -> AnnIndex | None:
    """The approximate index to search now: `current` caught up with the journal (or rebuilt),
    else a trusted or new one once an exact index of `loaded` vectors (None: not loaded) reaches
    `threshold`, else None: exact search."""
    ann = current
    if ann is None and threshold is not None and (loaded is None or loaded >= threshold):
        size = dims()
        if size is not None:
            ann = AnnIndex.open(conn, db_path, embedder_key, size, threshold, progress)
    if ann is not None and not ann.sync(journal):
        ann = AnnIndex.open(conn, db_path, embedder_key, ann.dims, 0, progress,
                            min_seq=sync_state(conn)[0])
        if ann is not None and not ann.sync(journal):
            raise StoreError(f"the vector index of {db_path} cannot keep up with the journal",
                             hint="search again; it is rebuilt")
    return ann


class AnnIndex:
    """One embedder's approximate index as this process serves it. Not thread-safe: the store's
    lock is held around every call, and `conn` is the store's connection."""

    def __init__(self, conn: sqlite3.Connection, stem: Path, header: AnnHeader) -> None:
        graph = usearch_index().restore(str(part_path(stem, "hnsw")), view=True)
        if graph is None:
            raise StoreError(f"{part_path(stem, 'hnsw')} is not a usearch index")
        self.graph = graph
        self.ids = np.load(part_path(stem, "ids.npy"), mmap_mode="r")
        self.codes = np.load(part_path(stem, "ns.npy"), mmap_mode="r")
        if len(self.ids) != header.count or len(self.codes) != header.count:
            raise StoreError(f"{stem.name}: {len(self.ids)} ids for {header.count} vectors")
        self.conn = conn
        self.stem = stem
        self.header = header
        self.dims = header.dims
        self.overlay = VectorIndex(header.dims)  # rows changed since the build, exact
        self.overlay.seq = header.seq
        self.deleted = 0  # deletions since the build: their graph nodes are dead weight
        self.gone: set[str] = set()  # ids deleted since the build
        # namespace pin -> (ids, vectors) read from the store, least recently used first
        self._blocks: OrderedDict[tuple[tuple[str, str], ...], tuple[list[str], np.ndarray]] = (
            OrderedDict())

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, conn: sqlite3.Connection, db_path: Path, embedder_key: str, dims: int,
             threshold: int, progress: Progress | None = None, min_seq: int = 0
             ) -> AnnIndex | None:
        """The trusted index on disk, else a fresh build when the store holds at least
        `threshold` vectors, else None (the store is small: exact search serves it)."""
        try:
            usearch_index()  # a dependency; a broken install says so here
        except ImportError as exc:
            raise StoreError(
                f"the vector index of {db_path} needs the usearch package: {exc}",
                hint="pip install usearch, or raise MEMVAULT_ANN_THRESHOLD above the store's "
                     "size for exact search") from exc
        stem = stem_for(db_path, embedder_key)
        served = cls._trusted(conn, stem, embedder_key, min_seq)
        if served is not None:  # a threshold raised above the store's size turns it off
            return served if served.header.count >= threshold else None
        count = conn.execute("SELECT COUNT(*) FROM vectors WHERE embedder_key = ?",
                             (embedder_key,)).fetchone()[0]
        if count < threshold:
            return None
        with build_lock(stem):
            served = cls._trusted(conn, stem, embedder_key, min_seq, quiet=True)
            if served is not None:  # another process built it while we waited
                return served
            log.warning("building the vector index of %s (%d vectors): searches wait for it",
                        db_path, count)
            build(db_path, stem, embedder_key, dims, progress)
            served = cls._trusted(conn, stem, embedder_key, 0)
        if served is None:
            raise StoreError(f"the vector index just built at {stem} does not verify",
                             hint="check the disk (free space, errors) and search again")
        return served

    @classmethod
    def _trusted(cls, conn: sqlite3.Connection, stem: Path, embedder_key: str, min_seq: int,
                 quiet: bool = False) -> AnnIndex | None:
        header = read_header(stem)
        if header is None:
            if not quiet and part_path(stem, "hnsw").exists():
                log.warning("vector index %s is not trusted (no readable header): not served, "
                            "rebuilt", stem.name)
            return None
        reason = check(stem, header, store_state(conn, embedder_key, header.seq))
        if reason is None and header.seq < min_seq:
            log.info("vector index %s: rebuilt with the changes since seq %d", stem.name,
                     header.seq)
            return None
        if reason is None:
            try:
                return cls(conn, stem, header)
            except (StoreError, OSError, ValueError, RuntimeError) as exc:
                reason = f"it cannot be mapped: {exc}"
        if not quiet:
            log.warning("vector index %s is not trusted (%s): not served, rebuilt",
                        stem.name, reason)
        return None

    # ------------------------------------------------------------------ keeping up

    def sync(self, journal: Journal) -> bool:
        """Catch up with the journal; False when the index must be rebuilt instead."""
        seq, version = sync_state(self.conn, self.header.embedder_key)
        if version != self.header.vectors_version or seq < self.overlay.seq:
            return False
        while self.overlay.seq < seq:
            entries = journal(self.overlay.seq, CATCH_UP_LIMIT)
            if not entries:  # the seq moved without entries (a restore's advance_seq)
                self.overlay.seq = seq
                break
            catch_up(self.conn, self.overlay, self.header.embedder_key, entries)
            for entry in entries:
                if entry.op == "DELETE":
                    self.deleted += 1
                    self.gone.add(entry.memory_id)
                else:
                    self.gone.discard(entry.memory_id)
            if self.changes() > max(REBUILD_MIN_CHANGES, REBUILD_FRACTION * self.header.count):
                return False
        return True

    def changes(self) -> int:
        return len(self.overlay) + self.deleted

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: np.ndarray,
        pinned: dict[str, str],
        top_k: int,
        threshold: float | None = None,
        allowed: set[str] | None = None,
        excluded: set[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Ids and cosine similarities, best first, as `VectorIndex.search` returns them."""
        query = np.asarray(query, dtype=np.float32)
        if top_k <= 0:
            return []
        codes = self._codes(pinned)
        rows = self._rows(codes)
        estimate = rows if allowed is None else min(rows, len(allowed))
        if estimate <= EXACT_ROWS:
            return self._exact(query, pinned, top_k, threshold, allowed, excluded)
        # Enough candidates that top_k of them are expected to pass the filter, four times over.
        count = min(MAX_CANDIDATES, max(CANDIDATES, math.ceil(
            4 * top_k * self.header.count / max(estimate, 1))))
        while True:
            self.graph.expansion_search = max(EXPANSION_SEARCH, count)
            keys = self.graph.search(query, count).keys
            if codes is not None:
                keys = keys[np.isin(self.codes[keys], codes)]
            ids = [i.decode() for i in self.ids[keys]]
            ids = [i for i in ids if i not in self.overlay and i not in self.gone
                   and (allowed is None or i in allowed) and not (excluded and i in excluded)]
            found, matrix = self._vectors(ids)
            if len(found) >= top_k or count >= self.header.count:
                break
            if count >= MAX_CANDIDATES:  # the filter is more selective than estimated
                return self._exact(query, pinned, top_k, threshold, allowed, excluded)
            count = min(MAX_CANDIDATES, count * 4)
        scored = list(zip(found, (matrix @ query).tolist(), strict=True))
        scored += self.overlay.search(query, pinned, top_k, None, allowed, excluded)
        if threshold is not None:
            scored = [(i, s) for i, s in scored if s >= threshold]
        scored.sort(key=lambda hit: -hit[1])
        return scored[:top_k]

    def _codes(self, pinned: dict[str, str]) -> np.ndarray | None:
        """The namespace numbers matching the entity pin, or None when every one does."""
        if not pinned:
            return None
        return np.array([code for code, triple in enumerate(self.header.namespaces)
                         if all(triple[ENTITY_KEYS.index(k)] == v for k, v in pinned.items())],
                        dtype=np.int32)

    def _rows(self, codes: np.ndarray | None) -> int:
        counts = self.header.namespace_counts
        built = sum(counts) if codes is None else sum(counts[c] for c in codes)
        return built + len(self.overlay)

    def _exact(self, query: np.ndarray, pinned: dict[str, str], top_k: int,
               threshold: float | None, allowed: set[str] | None, excluded: set[str] | None
               ) -> list[tuple[str, float]]:
        """Exact search over the rows the filter leaves: read from the store, or a cached read
        of the namespace plus the overlay (newer) minus the memories deleted since."""
        if allowed is not None:
            found, matrix = self._vectors([i for i in allowed if not (excluded and i in excluded)])
        else:
            found, matrix = self._namespace(pinned)
        if self.overlay or self.gone or excluded:
            keep = np.fromiter((i not in self.overlay and i not in self.gone
                                and not (excluded and i in excluded) for i in found),
                               dtype=bool, count=len(found))
            scores = np.where(keep, matrix @ query, -np.inf)
        else:
            scores = matrix @ query
        k = min(top_k, len(found))
        top = np.argpartition(-scores, k - 1)[:k] if 0 < k < len(found) else np.arange(k)
        hits = [(found[i], float(scores[i])) for i in top if np.isfinite(scores[i])]
        hits += self.overlay.search(query, pinned, top_k, None, allowed, excluded)
        hits = [h for h in hits if threshold is None or h[1] >= threshold]
        hits.sort(key=lambda hit: -hit[1])
        return hits[:top_k]

    def _namespace(self, pinned: dict[str, str]) -> tuple[list[str], np.ndarray]:
        """The ids and vectors of the memories matching the pin, as read at some seq after the
        build; small namespaces stay cached (a per-user search reads SQLite once)."""
        key = tuple(sorted(pinned.items()))
        cached = self._blocks.get(key)
        if cached is not None:
            self._blocks.move_to_end(key)
            return cached
        keys = [k for k in ENTITY_KEYS if k in pinned]
        where = " AND ".join(f"m.{k} = ?" for k in keys) or "1"
        rows = self._read(
            # CROSS JOIN keeps SQLite on the namespace index of memories first
            "SELECT v.memory_id, v.vector FROM memories m CROSS JOIN vectors v "
            f"ON v.memory_id = m.id AND v.embedder_key = ? WHERE {where}",
            (self.header.embedder_key, *(pinned[k] for k in keys)))
        block = ([r[0] for r in rows], self._matrix(rows))
        if len(rows) <= CACHED_ROWS:
            self._blocks[key] = block
            while sum(len(b[0]) for b in self._blocks.values()) > CACHED_ROWS:
                self._blocks.popitem(last=False)
        return block

    def _vectors(self, ids: list[str]) -> tuple[list[str], np.ndarray]:
        """The stored float32 vectors of those ids that still exist, in the order found."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows += self._read(
                "SELECT memory_id, vector FROM vectors WHERE embedder_key = ? "
                f"AND memory_id IN ({','.join('?' * len(chunk))})",
                (self.header.embedder_key, *chunk))
        return [r[0] for r in rows], self._matrix(rows)

    def _matrix(self, rows: list[tuple[Any, ...]]) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.dims), dtype=np.float32)
        return np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
            len(rows), self.dims)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite read for vector search failed: {exc}") from exc
