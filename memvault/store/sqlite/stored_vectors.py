"""Reading one embedder's float32 vectors back out of a SQLite store, for exact search.

The approximate index re-scores its candidates and searches small namespaces with these reads;
while no index can be served (it is being built) they answer the searches that leave few rows.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np

from memvault.errors import StoreUnavailable
from memvault.store.records import ENTITY_KEYS

_CHUNK = 500


class StoredVectors:
    """Reads on `conn` (the store's connection: callers hold the store's lock)."""

    def __init__(self, conn: sqlite3.Connection, embedder_key: str, dims: int) -> None:
        self.conn = conn
        self.embedder_key = embedder_key
        self.dims = dims

    def namespace(self, pinned: dict[str, str]) -> tuple[list[str], np.ndarray]:
        """The ids and vectors of the memories matching the entity pin."""
        keys = [k for k in ENTITY_KEYS if k in pinned]
        where = " AND ".join(f"m.{k} = ?" for k in keys) or "1"
        rows = self._read(
            # CROSS JOIN keeps SQLite on the namespace index of memories first
            "SELECT v.memory_id, v.vector FROM memories m CROSS JOIN vectors v "
            f"ON v.memory_id = m.id AND v.embedder_key = ? WHERE {where}",
            (self.embedder_key, *(pinned[k] for k in keys)))
        return [r[0] for r in rows], self.matrix(rows)

    def count(self, pinned: dict[str, str], limit: int) -> int:
        """How many memories match the pin, counted up to `limit` + 1 (bounded cost)."""
        keys = [k for k in ENTITY_KEYS if k in pinned]
        where = " AND ".join(f"{k} = ?" for k in keys) or "1"
        return int(self._read(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM memories WHERE {where} LIMIT ?)",
            (*(pinned[k] for k in keys), limit + 1))[0][0])

    def of(self, ids: list[str]) -> tuple[list[str], np.ndarray]:
        """The stored vectors of those ids that still exist, in the order found."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows += self._read(
                "SELECT memory_id, vector FROM vectors WHERE embedder_key = ? "
                f"AND memory_id IN ({','.join('?' * len(chunk))})",
                (self.embedder_key, *chunk))
        return [r[0] for r in rows], self.matrix(rows)

    def matrix(self, rows: list[tuple[Any, ...]]) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.dims), dtype=np.float32)
        return np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
            len(rows), self.dims)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite read for vector search failed: {exc}") from exc
