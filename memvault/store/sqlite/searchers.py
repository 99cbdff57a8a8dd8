"""What answers a SQLite store's vector searches, per embedder: the exact in-memory index
(loaded on first use, caught up with the journal, so writes of other processes are seen) or,
above the size threshold, the persisted approximate index (store/sqlite/ann.py), which is
built and rebuilt in the background (ann_builder.py) while searches are served from the old
index, the exact one already loaded, or ann_pending.py's exact reads."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from memvault.embed.base import EmbedderIdentity
from memvault.errors import StoreError
from memvault.progress import Progress
from memvault.store.records import JournalEntry
from memvault.store.sqlite.ann import AnnIndex, Synced
from memvault.store.sqlite.ann_builder import BuildState, BuildStatus, IndexBuilder
from memvault.store.sqlite.ann_pending import PendingIndex
from memvault.store.sqlite.index_sync import (
    CATCH_UP_LIMIT,
    apply_entries,
    catch_up,
    load_index,
    sync_state,
)
from memvault.store.vector_index import VectorIndex

log = logging.getLogger("memvault.store.sqlite")

Searcher = VectorIndex | AnnIndex | PendingIndex


class Searchers:
    """The store's search indexes; every method runs under the store's lock except
    `wait_for_build` and `close` (which must not: an index build never takes that lock)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, ann_threshold: int | None,
                 embedders: Callable[[], dict[str, EmbedderIdentity]],
                 journal: Callable[[int, int], list[JournalEntry]],
                 progress: Progress | None = None) -> None:
        self._conn = conn
        self._path = path
        # Above this many vectors an embedder is searched through a persisted approximate
        # index; None keeps exact search at every size.
        self.ann_threshold = ann_threshold
        self._progress = progress  # drives the bar of an index build
        # A one-shot caller (`memvault search`) waits for a build rather than being told to
        # retry; a server keeps serving what it can while the build runs.
        self._waits = False
        self._embedders = embedders
        self._journal = journal
        self.exact: dict[str, VectorIndex] = {}
        self._anns: dict[str, AnnIndex] = {}
        # Per embedder: the version of its vectors this process's index was built from.
        self._vectors_versions: dict[str, Any] = {}
        self.builder = IndexBuilder(path, conn, lambda: self._progress)

    def apply(self, entries: list[JournalEntry], vectors: dict[str, np.ndarray],
              embedder_key: str | None, replaced: bool = False) -> None:
        """This process's own writes, applied to the loaded exact indexes."""
        apply_entries(self.exact, entries, vectors, embedder_key, replaced)

    def show_builds(self, progress: Progress) -> None:
        """From now on a search that needs an index build waits for it, drawn on `progress`."""
        self._progress = progress
        self._waits = True

    def wait_for_build(self, embedder_key: str) -> None:
        """Called WITHOUT the store's lock when `searcher` said to wait."""
        self.builder.wait(embedder_key)

    def close(self) -> None:
        self.builder.close()

    def forget(self, embedder_key: str | None = None) -> None:
        """Drop one embedder's exact index (every one with None): reloaded on next search."""
        if embedder_key is None:
            self.exact.clear()
        else:
            self.exact.pop(embedder_key, None)

    def exact_index(self, embedder_key: str) -> VectorIndex:
        """The exact index of one embedder, loaded on first use and caught up."""
        seq, vectors_version = sync_state(self._conn, embedder_key)
        if vectors_version != self._vectors_versions.get(embedder_key):
            self.exact.pop(embedder_key, None)
            self._vectors_versions[embedder_key] = vectors_version
        index = self.exact.get(embedder_key)
        if index is not None and index.seq == seq:
            return index
        if index is not None and seq - index.seq <= CATCH_UP_LIMIT:
            catch_up(self._conn, index, embedder_key,
                     self._journal(index.seq, CATCH_UP_LIMIT))
            return index
        identity = self._embedders().get(embedder_key)
        if identity is None:
            raise StoreError(f"embedder {embedder_key} is not registered in this store")
        index = self.exact[embedder_key] = load_index(self._conn, identity, embedder_key)
        return index

    def searcher(self, embedder_key: str) -> Searcher | None:
        """The approximate index above the threshold (or what serves while it is built), else
        the exact in-memory one; None: wait for the build (`wait_for_build`) and ask again."""
        loaded = self.exact.get(embedder_key)
        threshold = self.ann_threshold
        if threshold is None or (loaded is not None and len(loaded) < threshold):
            return self.exact_index(embedder_key)
        old = self._anns.pop(embedder_key, None)
        ann = self.builder.take(embedder_key) or old  # a finished build replaces the old index
        if ann is None:
            dims = getattr(self._embedders().get(embedder_key), "dims", None)
            if dims is None:
                return self.exact_index(embedder_key)
            status = self.builder.status(embedder_key)
            if status.state in (BuildState.BUILDING, BuildState.FAILED):
                return self._pending(embedder_key, dims, status.cause, status.min_seq)
            ann = AnnIndex.open(self._conn, self._path, embedder_key, threshold)
            if ann is None:
                return self._pending(embedder_key, dims, "no trusted index on disk", 0)
        synced = ann.sync(self._journal, ann.soft_limit())
        cause = f"{ann.changes()} changes since the build at seq {ann.header.seq}"
        if synced is Synced.TOO_MANY_CHANGES and not self._waits:
            # served from this index and its overlay until the new one is in
            self.builder.start(embedder_key, ann.dims, cause, ann.header.seq + 1)
            synced = ann.sync(self._journal, ann.hard_limit())
            if synced is Synced.TOO_MANY_CHANGES:
                log.warning("vector index of %s: %d changes since its build, more than the %d "
                            "it follows while a rebuild runs; searches that need it wait for "
                            "the rebuild", self._path, ann.changes(), ann.hard_limit())
        if synced is Synced.CAUGHT_UP:
            self._anns[embedder_key] = ann
            self.exact.pop(embedder_key, None)
            return ann
        if synced is Synced.STALE:
            return self._pending(embedder_key, ann.dims, Synced.STALE.value, 0)
        return self._pending(embedder_key, ann.dims, cause, ann.header.seq + 1)

    def _pending(self, embedder_key: str, dims: int, cause: str, min_seq: int
                 ) -> Searcher | None:
        """No approximate index can serve: start (or follow) its build and answer meanwhile
        from the exact index if this process has it loaded, else as `PendingIndex` says."""
        rows = self._conn.execute("SELECT COUNT(*) FROM vectors WHERE embedder_key = ?",
                                  (embedder_key,)).fetchone()[0]
        if self.ann_threshold is None or rows < self.ann_threshold:
            return self.exact_index(embedder_key)
        self.builder.start(embedder_key, dims, cause, min_seq)
        status = self.builder.status(embedder_key)
        if status.state is BuildState.READY:
            return None  # done meanwhile: taken when the caller asks again
        if embedder_key in self.exact:  # first time above the threshold: exact until then
            return self.exact_index(embedder_key)
        if self._waits and status.state is BuildState.BUILDING:
            return None
        return PendingIndex(self._conn, self._path, embedder_key, dims, rows, status)

    def builds(self) -> list[BuildStatus]:
        return self.builder.statuses()
