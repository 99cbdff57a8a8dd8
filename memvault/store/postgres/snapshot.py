"""A frozen, read-only view of the whole store for a backup (REPEATABLE READ, server cursors)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg

from memvault.store.postgres.schema import JOURNAL_COLUMNS, SELECT, row_to_record
from memvault.store.records import JournalEntry, MemoryRecord


class PostgresSnapshot:
    def __init__(self, conn: psycopg.Connection[Any], seq: int) -> None:
        self._conn = conn
        self.seq = seq

    def _cursor(self, binary: bool = False) -> psycopg.ServerCursor[Any]:
        return self._conn.cursor(name=f"mv_snapshot_{uuid.uuid4().hex[:12]}", binary=binary)

    def counts(self) -> dict[str, int]:
        return {ns: int(n) for ns, n in self._conn.execute(
            "SELECT namespace, count(*) FROM memories GROUP BY namespace ORDER BY namespace")}

    def vector_counts(self) -> dict[str, int]:
        return {k: int(n) for k, n in self._conn.execute(
            "SELECT embedder_key, count(*) FROM vectors GROUP BY embedder_key")}

    def iter_records(self, batch_size: int = 5000) -> Iterator[list[MemoryRecord]]:
        with self._cursor() as cur:
            cur.execute(f"{SELECT} ORDER BY m.id")
            while rows := cur.fetchmany(batch_size):
                yield [row_to_record(row) for row in rows]

    def iter_vectors(
        self, embedder_key: str, batch_size: int = 5000
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        with self._cursor(binary=True) as cur:
            cur.execute(
                "SELECT memory_id, vector FROM vectors WHERE embedder_key = %s "
                "ORDER BY memory_id", (embedder_key,))
            while rows := cur.fetchmany(batch_size):
                yield [row[0] for row in rows], np.stack([row[1] for row in rows])

    def journal(self, after_seq: int = 0) -> Iterator[JournalEntry]:
        with self._cursor() as cur:
            cur.execute(
                f"SELECT {JOURNAL_COLUMNS} FROM journal WHERE seq > %s AND seq <= %s "
                "ORDER BY seq", (after_seq, self.seq))
            while rows := cur.fetchmany(5000):
                for row in rows:
                    yield JournalEntry.from_row(row)
