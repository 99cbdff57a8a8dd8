"""Binary COPY of memories, vectors and journal entries: the store's bulk write path."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from psycopg.copy import QueuedLibpqWriter

from memvault.store.keywords import KeywordTokenizer
from memvault.store.postgres.codec import binary_copy_vectors
from memvault.store.postgres.schema import INSERT_COLUMNS, INSERT_TYPES, JOURNAL_COLUMNS, copy_row
from memvault.store.records import JournalEntry, MemoryRecord


def copy_journal(cur: psycopg.Cursor[Any], entries: list[JournalEntry]) -> None:
    """Append journal entries and move the counter, in the caller's transaction."""
    if not entries:
        return
    with cur.copy(f"COPY journal ({JOURNAL_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "text", "text", "json", "json", "text", "text"])
        for e in entries:
            copy.write_row((e.seq, e.op, e.memory_id, e.before, e.after, e.ts, e.actor))
    cur.execute("UPDATE journal_counter SET seq = %s", (entries[-1].seq,))

def copy_memories(cur: psycopg.Cursor[Any], records: list[MemoryRecord],
                  keywords: KeywordTokenizer) -> None:
    if not records:
        return
    # Large batches: a writer thread sends while this one formats rows.
    writer = QueuedLibpqWriter(cur) if len(records) > 1000 else None
    with cur.copy(f"COPY memories ({', '.join(INSERT_COLUMNS)}) FROM STDIN "
                  "(FORMAT BINARY)", writer=writer) as copy:
        copy.set_types(INSERT_TYPES)
        for record in records:
            copy.write_row(copy_row(record, keywords))

def copy_vectors(
    cur: psycopg.Cursor[Any], ids: list[str], key: str, matrix: np.ndarray, table: str
) -> None:
    if not ids:
        return
    columns = "memory_id, embedder_key, vector" if table == "vectors" else "memory_id, vector"
    payload = binary_copy_vectors(ids, key if table == "vectors" else None, matrix)
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        for start in range(0, len(payload), 8 << 20):
            copy.write(payload[start : start + (8 << 20)])
