"""The SQLite store's schema: versioned migrations, the keyword index, and the steps that
rewrite old rows (namespace keys, index tokens)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from memvault.store.base import (
    legacy_key_condition,
    rekeyed_namespaces,
)
from memvault.store.keywords import KeywordTokenizer

log = logging.getLogger("memvault.store.sqlite")

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE memories (
        id TEXT PRIMARY KEY,
        memory TEXT NOT NULL,
        hash TEXT NOT NULL,
        metadata TEXT,
        user_id TEXT, agent_id TEXT, run_id TEXT, actor_id TEXT, role TEXT,
        namespace TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expiration_date TEXT,
        memory_type TEXT
    );
    CREATE UNIQUE INDEX memories_namespace_hash ON memories(namespace, hash);
    CREATE INDEX memories_user ON memories(user_id);
    CREATE INDEX memories_agent ON memories(agent_id);
    CREATE INDEX memories_run ON memories(run_id);
    CREATE INDEX memories_created ON memories(created_at);
    CREATE INDEX memories_expiration ON memories(expiration_date)
        WHERE expiration_date IS NOT NULL;
    CREATE TABLE embedders (
        key TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE vectors (
        memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
        embedder_key TEXT NOT NULL REFERENCES embedders(key),
        vector BLOB NOT NULL,
        PRIMARY KEY (memory_id, embedder_key)
    );
    CREATE INDEX vectors_embedder ON vectors(embedder_key);
    CREATE TABLE journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL CHECK (op IN ('ADD', 'UPDATE', 'DELETE')),
        memory_id TEXT NOT NULL,
        before TEXT,
        after TEXT,
        ts TEXT NOT NULL,
        actor TEXT
    );
    CREATE INDEX journal_memory ON journal(memory_id);
    """,
    2: "",  # data only: rekey_namespaces
    3: "",  # keyword index: add_keyword_index (its triggers hold ';' inside BEGIN ... END)
    4: "",  # PostgreSQL's keyword postings; FTS5 keeps its own
    5: "",  # PostgreSQL's scope columns of vectors; the SQLite index has its blocks
}

# The full-text index reads the token string of each memory (store/keywords.py) through
# external content: it lives in the memories row, and the triggers keep the index in the
# transaction that writes the row, whichever statement writes it. Joined on rowid: nothing
# VACUUMs a store (that could renumber the rowids of a table without an INTEGER key).
KEYWORD_INDEX = (
    # neighbours(): the memories around one in its namespace, in creation order
    "CREATE INDEX IF NOT EXISTS memories_namespace_created ON memories(namespace, created_at, id)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(keywords, content='memories', "
    "content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')",
    "INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')",
    # documents per term: keyword_ids bounds its work by it
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts_terms USING fts5vocab(memories_fts, 'row')",
    "CREATE TRIGGER IF NOT EXISTS memories_fts_insert AFTER INSERT ON memories BEGIN "
    "INSERT INTO memories_fts(rowid, keywords) VALUES (new.rowid, new.keywords); END",
    "CREATE TRIGGER IF NOT EXISTS memories_fts_delete AFTER DELETE ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, keywords) "
    "VALUES ('delete', old.rowid, old.keywords); END",
    "CREATE TRIGGER IF NOT EXISTS memories_fts_update AFTER UPDATE OF keywords ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, keywords) "
    "VALUES ('delete', old.rowid, old.keywords); "
    "INSERT INTO memories_fts(rowid, keywords) VALUES (new.rowid, new.keywords); END",
)

def rekey_namespaces(cur: sqlite3.Cursor, path: Path) -> None:
    """Rewrite the namespace of rows whose ids hold '%' or '/' in the escaped encoding. Via a
    unique stand-in first: a new key may equal another row's not yet rewritten old key."""
    rows = cur.execute("SELECT id, user_id, agent_id, run_id, namespace FROM memories WHERE "
                       + legacy_key_condition("instr")).fetchall()
    changes = rekeyed_namespaces(rows)
    cur.executemany("UPDATE memories SET namespace = ? WHERE id = ?",
                    [("\x00" + memory_id, memory_id) for _, memory_id in changes])
    cur.executemany("UPDATE memories SET namespace = ? WHERE id = ?", changes)
    if changes:
        log.info("re-keyed the namespace of %d memories in %s (ids holding '%%' or '/')",
                 len(changes), path)


def add_keyword_index(cur: sqlite3.Cursor, tokenizer: KeywordTokenizer, path: Path) -> None:
    """Give every stored memory its index tokens, then build the index over them (again, on a
    store whose version mark was lowered by hand: every step is idempotent)."""
    columns = {row[1] for row in cur.execute("PRAGMA table_info(memories)")}
    if "keywords" not in columns:
        cur.execute("ALTER TABLE memories ADD COLUMN keywords TEXT NOT NULL DEFAULT ''")
    rows = cur.execute("SELECT id, memory FROM memories").fetchall()
    cur.executemany("UPDATE memories SET keywords = ? WHERE id = ?",
                    [(tokenizer.document(text), memory_id) for memory_id, text in rows])
    for statement in KEYWORD_INDEX:
        cur.execute(statement)
    if rows:
        log.info("built the keyword index of %d memories in %s", len(rows), path)
