"""A consistent read of a SQLite store at one seq (one read transaction), for backups."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import numpy as np

from memvault.store.records import (
    JournalEntry,
    MemoryRecord,
)
from memvault.store.sqlite.rows import SELECT, row_to_record


class SQLiteSnapshot:
    def __init__(self, conn: sqlite3.Connection, seq: int) -> None:
        self._conn = conn
        self.seq = seq

    def counts(self) -> dict[str, int]:
        return dict(self._conn.execute(
            "SELECT namespace, count(*) FROM memories GROUP BY namespace ORDER BY namespace"))

    def vector_counts(self) -> dict[str, int]:
        return dict(self._conn.execute(
            "SELECT embedder_key, count(*) FROM vectors GROUP BY embedder_key"))

    def iter_records(self, batch_size: int = 5000) -> Iterator[list[MemoryRecord]]:
        cursor = self._conn.execute(f"{SELECT} ORDER BY m.id")
        while rows := cursor.fetchmany(batch_size):
            yield [row_to_record(row) for row in rows]

    def iter_vectors(
        self, embedder_key: str, batch_size: int = 5000
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        cursor = self._conn.execute(
            "SELECT memory_id, vector FROM vectors WHERE embedder_key = ? ORDER BY memory_id",
            (embedder_key,))
        while rows := cursor.fetchmany(batch_size):
            ids = [row[0] for row in rows]
            matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
            yield ids, matrix.reshape(len(rows), -1)

    def journal(self, after_seq: int = 0) -> Iterator[JournalEntry]:
        cursor = self._conn.execute(
            "SELECT seq, op, memory_id, before, after, ts, actor FROM journal "
            "WHERE seq > ? AND seq <= ? ORDER BY seq", (after_seq, self.seq))
        for row in cursor:
            yield JournalEntry.from_row(row)
