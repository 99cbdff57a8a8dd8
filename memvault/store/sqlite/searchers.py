"""What answers a SQLite store's vector searches, per embedder: the exact in-memory index
(loaded on first use, caught up with the journal, so writes of other processes are seen) or,
above the size threshold, the persisted approximate index (store/sqlite/ann.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from memvault.embed.base import EmbedderIdentity
from memvault.errors import StoreError
from memvault.progress import Progress
from memvault.store.records import JournalEntry
from memvault.store.sqlite.ann import AnnIndex, keep_up
from memvault.store.sqlite.index_sync import (
    CATCH_UP_LIMIT,
    apply_entries,
    catch_up,
    load_index,
    sync_state,
)
from memvault.store.vector_index import VectorIndex


class Searchers:
    """The store's search indexes; every method runs under the store's lock."""

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
        self._embedders = embedders
        self._journal = journal
        self.exact: dict[str, VectorIndex] = {}
        self._anns: dict[str, AnnIndex] = {}
        # Per embedder: the version of its vectors this process's index was built from.
        self._vectors_versions: dict[str, Any] = {}

    def apply(self, entries: list[JournalEntry], vectors: dict[str, np.ndarray],
              embedder_key: str | None, replaced: bool = False) -> None:
        """This process's own writes, applied to the loaded exact indexes."""
        apply_entries(self.exact, entries, vectors, embedder_key, replaced)

    def show_builds(self, progress: Progress) -> None:
        """Draw the index builds a search waits for from now on `progress`."""
        self._progress = progress

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

    def searcher(self, embedder_key: str) -> VectorIndex | AnnIndex:
        """The approximate index above the threshold, else the exact in-memory one."""
        loaded = self.exact.get(embedder_key)
        ann = keep_up(self._anns.pop(embedder_key, None), self._conn, self._path, embedder_key,
                      lambda: getattr(self._embedders().get(embedder_key), "dims", None),
                      self.ann_threshold, None if loaded is None else len(loaded),
                      self._progress, self._journal)
        if ann is None:
            return self.exact_index(embedder_key)
        self._anns[embedder_key] = ann
        self.exact.pop(embedder_key, None)
        return ann
