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
from enum import Enum
from pathlib import Path

import numpy as np

from memvault.errors import StoreError
from memvault.store.records import ENTITY_KEYS, JournalEntry
from memvault.store.sqlite.ann_build import usearch_index
from memvault.store.sqlite.ann_file import (
    AnnHeader,
    StoreState,
    check,
    part_path,
    read_header,
    stem_for,
)
from memvault.store.sqlite.index_sync import CATCH_UP_LIMIT, catch_up, sync_state
from memvault.store.sqlite.stored_vectors import StoredVectors
from memvault.store.vector_index import VectorIndex, best_hits

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
# While the rebuild runs (minutes at 1M) the overlay keeps following writes, up to this many
# times the changes that started it: at 1M x 384 dims 100,000 rows, 150 MB of RAM (serve stays
# under 1.2x the raw vectors) and ~8 ms of exact scan per search (numpy scans 1M in 76 ms).
# Beyond that searches stop being served from the index until the build is in (searchers).
OVERLAY_BOUND = 2


class Synced(Enum):
    """How far `AnnIndex.sync` got."""

    CAUGHT_UP = "caught up"
    TOO_MANY_CHANGES = "too many changes since the build"
    STALE = "the vectors were rewritten or the journal went back"


def store_state(conn: sqlite3.Connection, embedder_key: str, header_seq: int) -> StoreState:
    seq, version = sync_state(conn, embedder_key)
    store_id = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    ts = conn.execute("SELECT ts FROM journal WHERE seq = ?", (header_seq,)).fetchone()
    return StoreState(store_id=json.loads(store_id[0]) if store_id else "",
                      embedder_key=embedder_key, vectors_version=version, seq=seq,
                      seq_ts=ts[0] if ts else None)


class AnnIndex:
    """One embedder's approximate index as this process serves it. Not thread-safe: once served,
    the store's lock is held around every call, and `conn` is the store's connection."""

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
        self.stored = StoredVectors(conn, header.embedder_key, header.dims)
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
    def open(cls, conn: sqlite3.Connection, db_path: Path, embedder_key: str, threshold: int
             ) -> AnnIndex | None:
        """The trusted index on disk, or None (none is, or a threshold raised above its size
        turns it off): building one is `ann_builder`'s, off the store's lock."""
        try:
            usearch_index()  # a dependency; a broken install says so here
        except ImportError as exc:
            raise StoreError(
                f"the vector index of {db_path} needs the usearch package: {exc}",
                hint="pip install usearch, or raise MEMVAULT_ANN_THRESHOLD above the store's "
                     "size for exact search") from exc
        served = cls.trusted(conn, stem_for(db_path, embedder_key), embedder_key, 0)
        return served if served is not None and served.header.count >= threshold else None

    @classmethod
    def trusted(cls, conn: sqlite3.Connection, stem: Path, embedder_key: str, min_seq: int,
                quiet: bool = False, serve_on: sqlite3.Connection | None = None
                ) -> AnnIndex | None:
        """The index at `stem` if `check` trusts it against the store `conn` reads and it was
        built at `min_seq` or later; it then searches through `serve_on` (default `conn`)."""
        header = read_header(stem)
        if header is None:
            if not quiet and part_path(stem, "hnsw").exists():
                log.warning("vector index %s is not trusted (no readable header): not served, "
                            "rebuilt", stem.name)
            return None
        reason = check(stem, header, store_state(conn, embedder_key, header.seq))
        if reason is None and header.seq < min_seq:
            return None  # older than the one served: a build makes a newer one
        if reason is None:
            try:
                return cls(serve_on or conn, stem, header)
            except (StoreError, OSError, ValueError, RuntimeError) as exc:
                reason = f"it cannot be mapped: {exc}"
        if not quiet:
            log.warning("vector index %s is not trusted (%s): not served, rebuilt",
                        stem.name, reason)
        return None

    # ------------------------------------------------------------------ keeping up

    def soft_limit(self) -> int:
        """Changes since the build beyond which a rebuild starts."""
        return int(max(REBUILD_MIN_CHANGES, REBUILD_FRACTION * self.header.count))

    def hard_limit(self) -> int:
        """Changes the overlay may hold while a rebuild runs (see OVERLAY_BOUND)."""
        return OVERLAY_BOUND * self.soft_limit()

    def sync(self, journal: Journal, limit: int, conn: sqlite3.Connection | None = None
             ) -> Synced:
        """Catch up with the journal, stopping once more than `limit` changes are held. `conn`
        reads the store (default: the served connection; a builder catches up on its own)."""
        conn = conn or self.conn
        seq, version = sync_state(conn, self.header.embedder_key)
        if version != self.header.vectors_version or seq < self.overlay.seq:
            return Synced.STALE
        while self.overlay.seq < seq:
            if self.changes() > limit:
                return Synced.TOO_MANY_CHANGES
            entries = journal(self.overlay.seq, CATCH_UP_LIMIT)
            if not entries:  # the seq moved without entries (a restore's advance_seq)
                self.overlay.seq = seq
                break
            catch_up(conn, self.overlay, self.header.embedder_key, entries)
            for entry in entries:
                if entry.op == "DELETE":
                    self.deleted += 1
                    self.gone.add(entry.memory_id)
                else:
                    self.gone.discard(entry.memory_id)
        return Synced.TOO_MANY_CHANGES if self.changes() > limit else Synced.CAUGHT_UP

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
            found, matrix = self.stored.of(ids)
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
            found, matrix = self.stored.of([i for i in allowed if not (excluded and i in excluded)])
        else:
            found, matrix = self._namespace(pinned)
        if self.overlay or self.gone or excluded:
            keep = np.fromiter((i not in self.overlay and i not in self.gone
                                and not (excluded and i in excluded) for i in found),
                               dtype=bool, count=len(found))
            scores = np.where(keep, matrix @ query, -np.inf)
        else:
            scores = matrix @ query
        hits = best_hits(found, scores, top_k, threshold)
        hits += self.overlay.search(query, pinned, top_k, threshold, allowed, excluded)
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
        block = self.stored.namespace(pinned)
        if len(block[0]) <= CACHED_ROWS:
            self._blocks[key] = block
            while sum(len(b[0]) for b in self._blocks.values()) > CACHED_ROWS:
                self._blocks.popitem(last=False)
        return block
