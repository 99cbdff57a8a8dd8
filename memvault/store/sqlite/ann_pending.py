"""Searching while a SQLite store's approximate index cannot be served (it is being built).

An exact scan streamed from SQLite costs ~7 us a row on this machine (1.4 s at 200,000 rows,
~7 s at a million; BENCHMARKS.md "A million memories"): too slow to answer every search of a
server meanwhile, and under the store's lock it would stall writes. So a search whose filter
leaves at most EXACT_ROWS rows (a user's namespace, a selective metadata filter) is answered
exactly from SQLite, and a wider one fails fast with `IndexBuilding` (HTTP 503, how far the
build is, retry) -- or the build's failure. `memvault search` waits for the build instead.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from memvault.errors import IndexBuilding, StoreError
from memvault.store.sqlite import ann
from memvault.store.sqlite.ann_builder import FAILED_COOLDOWN_S, BuildState, BuildStatus
from memvault.store.sqlite.stored_vectors import StoredVectors
from memvault.store.vector_index import best_hits


class PendingIndex:
    """One embedder's searches until its approximate index is in; under the store's lock."""

    def __init__(self, conn: sqlite3.Connection, db_path: Path, embedder_key: str, dims: int,
                 rows: int, status: BuildStatus) -> None:
        self.dims = dims
        self.stored = StoredVectors(conn, embedder_key, dims)
        self._db_path = db_path
        self._rows = rows  # the embedder's vectors
        self._status = status

    def search(
        self,
        query: np.ndarray,
        pinned: dict[str, str],
        top_k: int,
        threshold: float | None = None,
        allowed: set[str] | None = None,
        excluded: set[str] | None = None,
    ) -> list[tuple[str, float]]:
        query = np.asarray(query, dtype=np.float32)
        if top_k <= 0:
            return []
        if allowed is not None:
            rows = len(allowed)
        else:
            rows = self.stored.count(pinned, ann.EXACT_ROWS) if pinned else self._rows
        if rows > ann.EXACT_ROWS:
            raise self.unavailable()
        if allowed is not None:
            found, matrix = self.stored.of([i for i in allowed if not (excluded and i in excluded)])
        else:
            found, matrix = self.stored.namespace(pinned)
        scores = matrix @ query
        if excluded:
            keep = np.fromiter((i not in excluded for i in found), dtype=bool, count=len(found))
            scores = np.where(keep, scores, -np.inf)
        return best_hits(found, scores, top_k, threshold)

    def unavailable(self) -> StoreError:
        status = self._status
        if status.state is BuildState.FAILED:
            return StoreError(
                f"the vector index of {self._db_path} could not be built ({status.last_error})",
                hint="see the server log for the cause (disk space, file permissions); the "
                     f"build is tried again {FAILED_COOLDOWN_S / 60:.0f} minutes after the "
                     "last attempt, or at the next start")
        left = status.seconds_left()
        eta = f", about {left:.0f} s left" if left is not None else ""
        return IndexBuilding(
            f"the vector index of {self._db_path} is being built ({status.percent()}% done"
            f"{eta}; because {status.cause}) and this search needs it",
            hint=f"retry in a few seconds; searches filtered to at most {ann.EXACT_ROWS:,} "
                 "memories are answered meanwhile, and writes go on")
