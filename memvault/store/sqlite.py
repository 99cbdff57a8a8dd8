"""The embedded default store: one SQLite file in WAL mode, exact search in memory."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from memvault.embed.base import EmbedderIdentity
from memvault.errors import InvalidInput, SchemaError, StoreError, StoreUnavailable
from memvault.store.base import (
    SCHEMA_VERSION,
    AddOutcome,
    Store,
    check_bulk_vectors,
    check_schema_version,
    legacy_key_condition,
    merge_update,
    rekeyed_namespaces,
)
from memvault.store.filter_sql import SQLITE, compile_sql
from memvault.store.filters import Node, entity_constraints, only_entity_constraints
from memvault.store.keywords import KeywordTokenizer, bounded_terms
from memvault.store.records import (
    ENTITY_KEYS,
    ENTITY_TYPES,
    JournalEntry,
    MemoryRecord,
    MetaKey,
    StoreMeta,
    utc_now,
)
from memvault.store.vector_index import VectorIndex
from memvault.store.writer_lock import file_identity

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
    2: "",  # data only: _rekey_namespaces
    3: "",  # keyword index: _add_keyword_index (its triggers hold ';' inside BEGIN ... END)
}

# The full-text index reads the token string of each memory (store/keywords.py) through
# external content: it lives in the memories row, and the triggers keep the index in the
# transaction that writes the row, whichever statement writes it. Joined on rowid: nothing
# VACUUMs a store (that could renumber the rowids of a table without an INTEGER key).
_KEYWORD_INDEX = (
    # neighbours(): the memories around one in its namespace, in creation order
    "CREATE INDEX IF NOT EXISTS memories_namespace_created ON memories(namespace, created_at, id)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(keywords, content='memories', "
    "content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')",
    "INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')",
    # documents per term: keyword_search bounds its work by it
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

_COLUMNS = (
    "id", "memory", "hash", "metadata", "user_id", "agent_id", "run_id", "actor_id", "role",
    "created_at", "updated_at", "expiration_date", "memory_type",
)
_SELECT = "SELECT " + ", ".join(f"m.{c}" for c in _COLUMNS) + " FROM memories m"


_INSERT = (f"INSERT INTO memories ({', '.join((*_COLUMNS[:9], 'namespace', *_COLUMNS[9:]))},"
           f" keywords) VALUES ({', '.join('?' * 15)})")


def _row_to_record(row: tuple[Any, ...]) -> MemoryRecord:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["metadata"] = json.loads(data["metadata"]) if data["metadata"] else None
    return MemoryRecord(**data)


def _record_params(record: MemoryRecord, tokenizer: KeywordTokenizer) -> tuple[Any, ...]:
    """The row of a record, its index tokens last."""
    metadata = json.dumps(record.metadata, ensure_ascii=False) if record.metadata else None
    return (
        record.id, record.memory, record.hash, metadata, record.user_id, record.agent_id,
        record.run_id, record.actor_id, record.role, record.namespace, record.created_at,
        record.updated_at, record.expiration_date, record.memory_type,
        tokenizer.document(record.memory),
    )


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _rekey_namespaces(cur: sqlite3.Cursor, path: Path) -> None:
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


def _add_keyword_index(cur: sqlite3.Cursor, tokenizer: KeywordTokenizer, path: Path) -> None:
    """Give every stored memory its index tokens, then build the index over them (again, on a
    store whose version mark was lowered by hand: every step is idempotent)."""
    columns = {row[1] for row in cur.execute("PRAGMA table_info(memories)")}
    if "keywords" not in columns:
        cur.execute("ALTER TABLE memories ADD COLUMN keywords TEXT NOT NULL DEFAULT ''")
    rows = cur.execute("SELECT id, memory FROM memories").fetchall()
    cur.executemany("UPDATE memories SET keywords = ? WHERE id = ?",
                    [(tokenizer.document(text), memory_id) for memory_id, text in rows])
    for statement in _KEYWORD_INDEX:
        cur.execute(statement)
    if rows:
        log.info("built the keyword index of %d memories in %s", len(rows), path)


def _match_expression(terms: list[str]) -> str:
    """An FTS5 query matching any of the stems, each a quoted string: no operator syntax."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


class SQLiteStore(Store):
    backend = "sqlite"

    def __init__(self, path: Path | str, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._indexes: dict[str, VectorIndex] = {}
        # Per embedder: the version of its vectors this process's index was built from.
        self._vectors_versions: dict[str, Any] = {}
        self.keywords = KeywordTokenizer()
        self._conn = self._connect(timeout)
        # The file this process opened: the guard notices when the path stops being it.
        self.opened_as = file_identity(self.path)
        self._migrate()

    # ------------------------------------------------------------------ opening

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if self.path.exists() and self.path.is_file():
            with self.path.open("rb") as handle:
                header = handle.read(16)
            if header and header != b"SQLite format 3\x00":
                raise SchemaError(
                    f"{self.path} is not a SQLite database",
                    hint="point MEMVAULT_DATABASE_URL at a memvault store or at a new file path",
                )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            # FULL: a commit is on disk (WAL fsynced) before the write is acknowledged.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Random UUID keys touch pages all over the b-trees: a larger cache keeps bulk
            # ingest from re-reading them (64 MiB; the default is 2 MiB).
            conn.execute("PRAGMA cache_size=-65536")
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(
                f"cannot open SQLite store {self.path}: {exc}",
                hint="check that the directory exists, is writable and the disk is not full",
            ) from exc
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        conn.create_function("mv_lower", 1, lambda s: s.lower() if isinstance(s, str) else s,
                             deterministic=True)
        return conn

    def _migrate(self) -> None:
        conn = self._conn
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            raise SchemaError(
                f"{self.path} is not a readable SQLite database: {exc}",
                hint="point MEMVAULT_DATABASE_URL at a memvault store or restore from a backup",
            ) from exc
        check_schema_version(
            version, tables, f"SQLite database {self.path}",
            "point MEMVAULT_DATABASE_URL at a new file; use `memvault import` for mem0",
        )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as cur:
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        cur.execute(statement)
                if target == 2:
                    _rekey_namespaces(cur, self.path)
                if target == 3:
                    _add_keyword_index(cur, self.keywords, self.path)
                if target == 1:
                    now = utc_now()
                    for key, value in {
                        "store_id": str(uuid.uuid4()),
                        "lineage_id": str(uuid.uuid4()),
                        "created_at": now,
                    }.items():
                        cur.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(value)))
                cur.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (json.dumps(target),),
                )
                cur.execute(f"PRAGMA user_version = {target}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise InvalidInput(f"the write conflicts with stored data: {exc}") from exc
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(f"SQLite write to {self.path} failed: {exc}",
                                           hint="check disk space and file permissions") from exc
                raise
            finally:
                cur.close()

    def _read(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite read from {self.path} failed: {exc}") from exc

    # ------------------------------------------------------------------ identity

    def meta(self) -> StoreMeta:
        values = {k: json.loads(v) for k, v in self._read("SELECT key, value FROM meta")}
        return StoreMeta.from_values(values, backend=self.backend, location=str(self.path))

    def set_meta(self, key: str, value: Any) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def get_meta(self, key: str) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def register_embedder(self, identity: EmbedderIdentity) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO embedders VALUES (?, ?, ?) ON CONFLICT(key) DO NOTHING",
                (identity.key, json.dumps(identity.to_json()), utc_now()),
            )

    def embedders(self) -> dict[str, EmbedderIdentity]:
        return {
            key: EmbedderIdentity.from_json(json.loads(identity))
            for key, identity in self._read("SELECT key, identity FROM embedders")
        }

    def set_active_embedder(self, key: str) -> None:
        if key not in self.embedders():
            raise StoreError(f"embedder {key} is not registered in this store")
        self.set_meta(MetaKey.ACTIVE_EMBEDDER, key)

    # ------------------------------------------------------------------ writes

    def _next_seq(self, cur: sqlite3.Cursor) -> int:
        row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
        return (row[0] if row else 0) + 1

    def _journal(self, cur: sqlite3.Cursor, entries: list[JournalEntry]) -> None:
        cur.executemany(
            "INSERT INTO journal (seq, op, memory_id, before, after, ts, actor) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(e.seq, e.op, e.memory_id, _dumps(e.before), _dumps(e.after), e.ts, e.actor)
             for e in entries],
        )

    def add(
        self,
        records: list[MemoryRecord],
        vectors: np.ndarray,
        embedder_key: str,
        actor: str | None,
    ) -> list[AddOutcome]:
        if len(records) != len(vectors):
            raise StoreError(f"{len(records)} records but {len(vectors)} vectors")
        if not records:
            return []
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._transaction() as cur:
            existing = self._existing_hashes(cur, records)
            outcomes: list[AddOutcome] = []
            fresh: list[tuple[MemoryRecord, np.ndarray]] = []
            seq = self._next_seq(cur)
            entries: list[JournalEntry] = []
            for record, vector in zip(records, vectors, strict=True):
                slot = (record.namespace, record.hash)
                if slot in existing:
                    outcomes.append(AddOutcome(existing[slot], False, None))
                    continue
                existing[slot] = record.id
                entry = JournalEntry(seq, "ADD", record.id, record.created_at, actor, None,
                                     record.to_dict())
                seq += 1
                entries.append(entry)
                fresh.append((record, vector))
                outcomes.append(AddOutcome(record.id, True, entry))
            cur.executemany(_INSERT, [_record_params(r, self.keywords) for r, _ in fresh])
            cur.executemany(
                "INSERT INTO vectors VALUES (?, ?, ?)",
                [(r.id, embedder_key, v.tobytes()) for r, v in fresh],
            )
            self._journal(cur, entries)
        self._apply(entries, {r.id: v for r, v in fresh}, embedder_key)
        return outcomes

    def _existing_hashes(
        self, cur: sqlite3.Cursor, records: list[MemoryRecord]
    ) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        by_namespace: dict[str, set[str]] = {}
        for r in records:
            by_namespace.setdefault(r.namespace, set()).add(r.hash)
        for namespace, hash_set in by_namespace.items():
            hashes = sorted(hash_set)
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = cur.execute(  # served by the unique (namespace, hash) index
                    f"SELECT hash, id FROM memories WHERE namespace = ? AND hash IN ({marks})",
                    (namespace, *chunk),
                ).fetchall()
                found.update({(namespace, h): i for h, i in rows})
        return found

    def update(
        self,
        record: MemoryRecord,
        vector: np.ndarray | None,
        embedder_key: str,
        actor: str | None,
        fields: Collection[str] | None = None,
    ) -> JournalEntry:
        with self._transaction() as cur:
            row = cur.execute(f"{_SELECT} WHERE m.id = ?", (record.id,)).fetchone()
            if row is None:
                raise InvalidInput(f"memory {record.id} does not exist")
            before = _row_to_record(row)
            record = merge_update(before, record, fields, vector)
            params = _record_params(record, self.keywords)
            cur.execute(
                "UPDATE memories SET memory=?, hash=?, metadata=?, user_id=?, agent_id=?, "
                "run_id=?, actor_id=?, role=?, namespace=?, created_at=?, updated_at=?, "
                "expiration_date=?, memory_type=?, keywords=? WHERE id=?",
                (*params[1:], record.id),
            )
            if vector is not None:
                cur.execute("DELETE FROM vectors WHERE memory_id = ?", (record.id,))
                cur.execute(
                    "INSERT INTO vectors VALUES (?, ?, ?)",
                    (record.id, embedder_key, np.asarray(vector, dtype=np.float32).tobytes()),
                )
            entry = JournalEntry(self._next_seq(cur), "UPDATE", record.id, record.updated_at,
                                 actor, before.to_dict(), record.to_dict())
            self._journal(cur, [entry])
        self._apply([entry], {record.id: vector} if vector is not None else {}, embedder_key,
                    replaced=vector is not None)
        return entry

    def delete(self, ids: list[str], actor: str | None) -> list[JournalEntry]:
        if not ids:
            return []
        entries: list[JournalEntry] = []
        with self._transaction() as cur:
            seq = self._next_seq(cur)
            now = utc_now()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = cur.execute(f"{_SELECT} WHERE m.id IN ({marks})", chunk).fetchall()
                for row in rows:
                    record = _row_to_record(row)
                    entries.append(JournalEntry(seq, "DELETE", record.id, now, actor,
                                                record.to_dict(), None))
                    seq += 1
                cur.execute(f"DELETE FROM memories WHERE id IN ({marks})", chunk)
            self._journal(cur, entries)
        self._apply(entries, {}, None)
        return entries

    def put_vectors(self, ids: list[str], vectors: np.ndarray, embedder_key: str) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._transaction() as cur:
            cur.executemany(
                "INSERT INTO vectors VALUES (?, ?, ?) ON CONFLICT(memory_id, embedder_key) "
                "DO UPDATE SET vector = excluded.vector",
                [(i, embedder_key, v.tobytes()) for i, v in zip(ids, vectors, strict=True)],
            )
            # Other processes reload this embedder's index (only this one's: re-embedding
            # for a new model must not make every search of the live model reload).
            cur.execute(
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (f"vectors_version:{embedder_key}", json.dumps(str(uuid.uuid4()))),
            )
        with self._lock:
            self._indexes.pop(embedder_key, None)  # rebuilt on next search

    def bulk_load(
        self,
        records: list[MemoryRecord],
        vectors: dict[str, np.ndarray],
        *,
        journal: bool = False,
        actor: str | None = None,
    ) -> int:
        check_bulk_vectors(records, vectors, set(self.embedders()))
        if not records:
            return 0
        with self._transaction() as cur:
            cur.executemany(_INSERT, [_record_params(r, self.keywords) for r in records])
            for key, matrix in vectors.items():
                matrix = np.ascontiguousarray(matrix, dtype=np.float32)
                cur.executemany(
                    "INSERT INTO vectors VALUES (?, ?, ?)",
                    [(r.id, key, v.tobytes()) for r, v in zip(records, matrix, strict=True)],
                )
            if journal:
                seq = self._next_seq(cur)
                self._journal(cur, [
                    JournalEntry(seq + i, "ADD", r.id, utc_now(), actor, None, r.to_dict())
                    for i, r in enumerate(records)
                ])
        with self._lock:
            self._indexes.clear()  # reloaded on the next search
        return len(records)

    def advance_seq(self, seq: int) -> None:
        with self._transaction() as cur:
            current = self._next_seq(cur) - 1
            if seq <= current:
                return
            if cur.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'journal'").fetchone():
                cur.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'journal'", (seq,))
            else:
                cur.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('journal', ?)",
                            (seq,))
        with self._lock:
            self._indexes.clear()

    @contextmanager
    def snapshot(self) -> Iterator[_SQLiteSnapshot]:
        # A second connection holding one read transaction: WAL gives it a frozen view while
        # the main connection keeps committing.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN")
            seq = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
            yield _SQLiteSnapshot(conn, seq[0] if seq else 0)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
            conn.close()

    # ------------------------------------------------------------------ index upkeep

    def _apply(
        self,
        entries: list[JournalEntry],
        vectors: dict[str, np.ndarray],
        embedder_key: str | None,
        replaced: bool = False,
    ) -> None:
        """Bring loaded indexes up to date after our own commit, without reading back.

        Namespaces never change after add, so only new vectors and deletions move the index.
        """
        if not entries:
            return
        with self._lock:
            for key, index in self._indexes.items():
                if index.seq != entries[0].seq - 1:
                    continue  # another process wrote in between: _index() catches up
                for entry in entries:
                    vector = vectors.get(entry.memory_id) if key == embedder_key else None
                    if entry.op == "DELETE" or (vector is None and replaced):
                        index.remove(entry.memory_id)
                    elif vector is not None:
                        after = entry.after or {}
                        triple = (after.get("user_id"), after.get("agent_id"), after.get("run_id"))
                        index.upsert(entry.memory_id, triple, vector)
                index.seq = entries[-1].seq

    def _sync_state(self, embedder_key: str = "") -> tuple[int, Any]:
        row = self._conn.execute(
            "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'journal'), "
            "(SELECT value FROM meta WHERE key = ?)", (f"vectors_version:{embedder_key}",)
        ).fetchone()
        return (row[0] or 0), row[1]

    def _index(self, embedder_key: str) -> VectorIndex:
        """The index of one embedder, loaded on first use and caught up with the journal."""
        seq, vectors_version = self._sync_state(embedder_key)
        if vectors_version != self._vectors_versions.get(embedder_key):
            self._indexes.pop(embedder_key, None)
            self._vectors_versions[embedder_key] = vectors_version
        index = self._indexes.get(embedder_key)
        if index is not None and index.seq == seq:
            return index
        if index is not None and seq - index.seq <= 10_000:
            self._catch_up(index, embedder_key)
            return index
        return self._load_index(embedder_key)

    def _load_index(self, embedder_key: str) -> VectorIndex:
        identity = self.embedders().get(embedder_key)
        if identity is None:
            raise StoreError(f"embedder {embedder_key} is not registered in this store")
        index = VectorIndex(identity.dims)
        conn = self._conn
        conn.execute("BEGIN")  # one snapshot for the rows and the seq
        try:
            index.seq = self._sync_state()[0]
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
        self._indexes[embedder_key] = index
        return index

    def _catch_up(self, index: VectorIndex, embedder_key: str) -> None:
        entries = self.journal(after_seq=index.seq, limit=10_000)
        touched = [e.memory_id for e in entries if e.op != "DELETE"]
        rows: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(touched), 500):
            chunk = touched[start : start + 500]
            for row in self._conn.execute(
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

    # ------------------------------------------------------------------ reads

    def get(self, memory_id: str) -> MemoryRecord | None:
        rows = self._read(f"{_SELECT} WHERE m.id = ?", (memory_id,))
        return _row_to_record(rows[0]) if rows else None

    def _get_many(self, ids: list[str]) -> dict[str, MemoryRecord]:
        found: dict[str, MemoryRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"{_SELECT} WHERE m.id IN ({marks})", chunk):
                record = _row_to_record(row)
                found[record.id] = record
        return found

    def _where(self, node: Node | None, include_expired: bool) -> tuple[str, list[Any]]:
        where, params = compile_sql(node, SQLITE)
        if not include_expired:
            where += " AND (m.expiration_date IS NULL OR m.expiration_date >= ?)"
            params.append(_today())
        return where, params

    def list(
        self, node: Node | None, limit: int | None = None, include_expired: bool = True
    ) -> list[MemoryRecord]:
        where, params = self._where(node, include_expired)
        sql = f"{_SELECT} WHERE {where} ORDER BY m.created_at DESC, m.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row_to_record(row) for row in self._read(sql, params)]

    def search(
        self,
        query: np.ndarray,
        embedder_key: str,
        node: Node | None,
        top_k: int,
        threshold: float | None = None,
        include_expired: bool = True,
    ) -> list[tuple[MemoryRecord, float]]:
        with self._lock:
            index = self._index(embedder_key)
            if query.shape != (index.dims,):
                raise InvalidInput(
                    f"query vector has shape {query.shape}, the index holds {index.dims} dims"
                )
            allowed = None
            if not only_entity_constraints(node):
                where, params = self._where(node, True)
                allowed = {r[0] for r in self._read(f"SELECT m.id FROM memories m WHERE {where}",
                                                    params)}
            excluded = None
            if not include_expired:
                excluded = {r[0] for r in self._read(
                    "SELECT id FROM memories WHERE expiration_date IS NOT NULL "
                    "AND expiration_date < ?", (_today(),))}
            hits = index.search(query, entity_constraints(node), top_k, threshold, allowed,
                                excluded)
            records = self._get_many([memory_id for memory_id, _ in hits])
        return [(records[i], score) for i, score in hits if i in records]

    def keyword_search(
        self, query: str, node: Node | None, top_k: int, include_expired: bool = True,
    ) -> list[tuple[MemoryRecord, float]]:
        terms = self.keywords.query_terms(query)
        if not terms:
            return []
        marks = ",".join("?" * len(terms))
        terms = bounded_terms(terms, dict(self._read(
            f"SELECT term, doc FROM memories_fts_terms WHERE term IN ({marks})", terms)))
        if not terms:
            return []
        where, params = self._where(node, include_expired)
        rows = self._read(
            f"SELECT {', '.join(f'm.{c}' for c in _COLUMNS)}, -bm25(memories_fts) "
            "FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid "
            f"WHERE memories_fts MATCH ? AND {where} ORDER BY bm25(memories_fts) LIMIT ?",
            [_match_expression(terms), *params, top_k])
        return [(_row_to_record(row[:-1]), float(row[-1])) for row in rows]

    def neighbours(self, ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        found: dict[str, tuple[str | None, str | None]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            # Same instant first, then earlier/later ones: SQLite seeks a row-value range on
            # its first column only, which scans every tie (all of a batch add share one).
            rows = self._read(
                "SELECT m.id, coalesce("
                "(SELECT p.id FROM memories p WHERE p.namespace = m.namespace AND "
                "p.created_at = m.created_at AND p.id < m.id ORDER BY p.id DESC LIMIT 1), "
                "(SELECT p.id FROM memories p WHERE p.namespace = m.namespace AND "
                "p.created_at < m.created_at ORDER BY p.created_at DESC, p.id DESC LIMIT 1)), "
                "coalesce("
                "(SELECT n.id FROM memories n WHERE n.namespace = m.namespace AND "
                "n.created_at = m.created_at AND n.id > m.id ORDER BY n.id LIMIT 1), "
                "(SELECT n.id FROM memories n WHERE n.namespace = m.namespace AND "
                "n.created_at > m.created_at ORDER BY n.created_at, n.id LIMIT 1)) "
                f"FROM memories m WHERE m.id IN ({','.join('?' * len(chunk))})", chunk)
            found.update({row[0]: (row[1], row[2]) for row in rows})
        return found

    def history(self, memory_id: str) -> list[JournalEntry]:
        rows = self._read(
            "SELECT seq, op, memory_id, before, after, ts, actor FROM journal "
            "WHERE memory_id = ? ORDER BY seq", (memory_id,))
        return [JournalEntry.from_row(r) for r in rows]

    def journal(self, after_seq: int = 0, limit: int = 10_000) -> list[JournalEntry]:
        rows = self._read(
            "SELECT seq, op, memory_id, before, after, ts, actor FROM journal "
            "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [JournalEntry.from_row(r) for r in rows]

    def last_seq(self) -> int:
        with self._lock:
            return self._sync_state()[0]

    def counts(self) -> dict[str, int]:
        return dict(self._read(
            "SELECT namespace, count(*) FROM memories GROUP BY namespace ORDER BY namespace"))

    def vector_counts(self) -> dict[str, int]:
        return dict(self._read("SELECT embedder_key, count(*) FROM vectors GROUP BY embedder_key"))

    def entities(self) -> list[dict[str, Any]]:
        result = []
        for column in ENTITY_KEYS:
            rows = self._read(
                f"SELECT {column}, count(*), min(created_at), max(updated_at) FROM memories "
                f"WHERE {column} IS NOT NULL GROUP BY {column} ORDER BY {column}")
            result.extend(
                {"id": value, "type": ENTITY_TYPES[column], "total_memories": count,
                 "created_at": created, "updated_at": updated}
                for value, count, created, updated in rows
            )
        return result


class _SQLiteSnapshot:
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
        cursor = self._conn.execute(f"{_SELECT} ORDER BY m.id")
        while rows := cursor.fetchmany(batch_size):
            yield [_row_to_record(row) for row in rows]

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
