"""The in-memory vector indexes of a SQLite store, kept in step with the file.

Other processes may write the same file: every search first compares the journal's seq (and
the embedder's vectors version) with what the index has seen, catches up from the journal
when it is a little behind and reloads when it is far behind or the vectors were rewritten.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np

from memvault.embed.base import EmbedderIdentity
from memvault.store.records import JournalEntry
from memvault.store.vector_index import VectorIndex

CATCH_UP_LIMIT = 10_000  # journal entries replayed into a loaded index before a full reload


def apply_entries(indexes: dict[str, VectorIndex], entries: list[JournalEntry],
                  vectors: dict[str, np.ndarray], embedder_key: str | None,
                  replaced: bool = False) -> None:
    """Bring loaded indexes up to date after our own commit, without reading back.

    Namespaces never change after add, so only new vectors and deletions move the index.
    """
    if not entries:
        return
    for key, index in indexes.items():
        if index.seq != entries[0].seq - 1:
            continue  # another process wrote in between: the next search catches up
        for entry in entries:
            vector = vectors.get(entry.memory_id) if key == embedder_key else None
            if entry.op == "DELETE" or (vector is None and replaced):
                index.remove(entry.memory_id)
            elif vector is not None:
                after = entry.after or {}
                triple = (after.get("user_id"), after.get("agent_id"), after.get("run_id"))
                index.upsert(entry.memory_id, triple, vector)
        index.seq = entries[-1].seq


def sync_state(conn: sqlite3.Connection, embedder_key: str = "") -> tuple[int, Any]:
    """(the journal's seq, the embedder's vectors version) as the file says now."""
    row = conn.execute(
        "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'journal'), "
        "(SELECT value FROM meta WHERE key = ?)", (f"vectors_version:{embedder_key}",)
    ).fetchone()
    return (row[0] or 0), row[1]


def load_index(conn: sqlite3.Connection, identity: EmbedderIdentity, embedder_key: str
               ) -> VectorIndex:
    index = VectorIndex(identity.dims)
    conn.execute("BEGIN")  # one snapshot for the rows and the seq
    try:
        index.seq = sync_state(conn)[0]
        rows = conn.execute(
            "SELECT m.user_id, m.agent_id, m.run_id, m.id, v.vector FROM vectors v "
            "JOIN memories m ON m.id = v.memory_id WHERE v.embedder_key = ?",
            (embedder_key,),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    # One matrix per namespace, built from the joined blobs: the CLI's cold start loads
    # every vector, so no per-row Python work here.
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(row[:3], []).append(row)
    for triple, members in groups.items():
        matrix = np.frombuffer(b"".join(row[4] for row in members), dtype=np.float32)
        index.load_block(triple, [row[3] for row in members],
                         matrix.reshape(len(members), identity.dims))
    return index


def catch_up(conn: sqlite3.Connection, index: VectorIndex, embedder_key: str,
             entries: list[JournalEntry]) -> None:
    """Replay journal entries written by other processes into a loaded index."""
    touched = [e.memory_id for e in entries if e.op != "DELETE"]
    rows: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(touched), 500):
        chunk = touched[start : start + 500]
        for row in conn.execute(
            "SELECT m.id, m.user_id, m.agent_id, m.run_id, v.vector FROM memories m "
            "JOIN vectors v ON v.memory_id = m.id AND v.embedder_key = ? "
            f"WHERE m.id IN ({','.join('?' * len(chunk))})",
            (embedder_key, *chunk),
        ):
            rows[row[0]] = row
    for entry in entries:
        row = rows.get(entry.memory_id)
        if entry.op == "DELETE" or row is None:
            index.remove(entry.memory_id)
        else:
            index.upsert(entry.memory_id, (row[1], row[2], row[3]),
                         np.frombuffer(row[4], dtype=np.float32))
    if entries:
        index.seq = entries[-1].seq


JOURNAL_SQL = ("SELECT seq, op, memory_id, before, after, ts, actor FROM journal "
               "WHERE seq > ? ORDER BY seq LIMIT ?")


def read_journal(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[JournalEntry]:
    """The journal after `after_seq` as `conn` reads it (a builder's own connection)."""
    return [JournalEntry.from_row(r) for r in conn.execute(JOURNAL_SQL, (after_seq, limit))]
