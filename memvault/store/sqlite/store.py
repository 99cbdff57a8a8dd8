"""The embedded default store: one SQLite file in WAL mode, exact search in memory."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from memvault.embed.base import EmbedderIdentity
from memvault.errors import InvalidInput, SchemaError, StoreError, StoreUnavailable
from memvault.progress import Progress
from memvault.store.base import (
    SCHEMA_VERSION,
    AddOutcome,
    Store,
    check_bulk_vectors,
    check_schema_version,
    entity_summaries,
    merge_update,
    plan_adds,
)
from memvault.store.filter_sql import SQLITE, compile_sql
from memvault.store.filters import Node, entity_constraints, only_entity_constraints
from memvault.store.keywords import KeywordTokenizer
from memvault.store.records import (
    JournalEntry,
    MemoryRecord,
    MetaKey,
    StoreMeta,
    utc_now,
)
from memvault.store.sqlite.index_sync import JOURNAL_SQL, sync_state
from memvault.store.sqlite.keyword import KeywordRanking
from memvault.store.sqlite.probe import refuse_non_sqlite
from memvault.store.sqlite.rows import (
    INSERT,
    SELECT,
    dumps,
    record_params,
    row_to_record,
    today,
)
from memvault.store.sqlite.schema import MIGRATIONS, add_keyword_index, rekey_namespaces
from memvault.store.sqlite.searchers import Searchers
from memvault.store.sqlite.snapshot import SQLiteSnapshot
from memvault.store.writer_lock import file_identity

log = logging.getLogger("memvault.store.sqlite")
T = TypeVar("T")


class SQLiteStore(Store):
    backend = "sqlite"

    def __init__(self, path: Path | str, *, timeout: float = 5.0,
                 ann_threshold: int | None = None, progress: Progress | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.ann_threshold = ann_threshold
        self.keywords = KeywordTokenizer()
        self._conn = self._connect(timeout)
        # The file this process opened: the guard notices when the path stops being it.
        self.opened_as = file_identity(self.path)
        self._migrate()
        self._searchers = Searchers(self._conn, self.path, ann_threshold, self.embedders,
                                    self.journal, progress)
        # Keyword search reads on a connection of its own: a hybrid search runs it in a worker
        # while the vector search holds the store's lock, and WAL lets both read at once.
        self._keyword_lock = threading.Lock()
        self._keyword_conn = self._connect(timeout)
        self._keyword = KeywordRanking(self._keyword_read, self._keyword_figures, self.last_seq,
                                       self.keywords)

    def _connect(self, timeout: float) -> sqlite3.Connection:
        refuse_non_sqlite(self.path)  # never opened from Python: see probe.py
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
                    rekey_namespaces(cur, self.path)
                if target == 3:
                    add_keyword_index(cur, self.keywords, self.path)
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
        self._searchers.close()  # stops index builds first: they read the file on their own
        with self._lock, self._keyword_lock:
            self._conn.close()
            self._keyword_conn.close()

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

    def _keyword_read(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._keyword_lock:
            try:
                return self._keyword_conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite read from {self.path} failed: {exc}") from exc

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

    def _next_seq(self, cur: sqlite3.Cursor) -> int:
        row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
        return (row[0] if row else 0) + 1

    def _journal(self, cur: sqlite3.Cursor, entries: list[JournalEntry]) -> None:
        cur.executemany(
            "INSERT INTO journal (seq, op, memory_id, before, after, ts, actor) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(e.seq, e.op, e.memory_id, dumps(e.before), dumps(e.after), e.ts, e.actor)
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
            plan = plan_adds(records, self._existing_hashes(cur, records),
                             self._next_seq(cur), actor)
            fresh = [(records[row], vectors[row]) for row in plan.rows]
            cur.executemany(INSERT, [record_params(r, self.keywords) for r, _ in fresh])
            cur.executemany(
                "INSERT INTO vectors VALUES (?, ?, ?)",
                [(r.id, embedder_key, v.tobytes()) for r, v in fresh],
            )
            self._journal(cur, plan.entries)
        self._apply(plan.entries, {r.id: v for r, v in fresh}, embedder_key)
        return plan.outcomes

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
            row = cur.execute(f"{SELECT} WHERE m.id = ?", (record.id,)).fetchone()
            if row is None:
                raise InvalidInput(f"memory {record.id} does not exist")
            before = row_to_record(row)
            record = merge_update(before, record, fields, vector)
            params = record_params(record, self.keywords)
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
                rows = cur.execute(f"{SELECT} WHERE m.id IN ({marks})", chunk).fetchall()
                for row in rows:
                    record = row_to_record(row)
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
            self._new_vectors_version(cur, embedder_key)
        with self._lock:
            self._searchers.forget(embedder_key)  # rebuilt on next search

    def _new_vectors_version(self, cur: sqlite3.Cursor, embedder_key: str) -> None:
        cur.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                    "excluded.value",
                    (f"vectors_version:{embedder_key}", json.dumps(str(uuid.uuid4()))))

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
            cur.executemany(INSERT, [record_params(r, self.keywords) for r in records])
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
            else:  # no journal entries to catch up from: other processes reload
                for key in vectors:
                    self._new_vectors_version(cur, key)
        with self._lock:
            self._searchers.forget()  # reloaded on the next search
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
            self._searchers.forget()

    @contextmanager
    def snapshot(self) -> Iterator[SQLiteSnapshot]:
        # A second connection holding one read transaction: WAL gives it a frozen view while
        # the main connection keeps committing.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN")
            seq = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
            yield SQLiteSnapshot(conn, seq[0] if seq else 0)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
            conn.close()

    def _apply(
        self,
        entries: list[JournalEntry],
        vectors: dict[str, np.ndarray],
        embedder_key: str | None,
        replaced: bool = False,
    ) -> None:
        with self._lock:
            self._searchers.apply(entries, vectors, embedder_key, replaced)

    def show_index_builds(self, progress: Progress) -> None:
        self._searchers.show_builds(progress)

    def index_builds(self) -> list[dict[str, Any]]:
        return [status.report() for status in self._searchers.builds()]

    def build_search_indexes(self) -> None:
        """Start building the approximate index of each embedder large enough for one now (a
        restore just loaded its vectors) rather than at the first search; after
        show_index_builds (a one-shot command) wait for it, so the store is left with a
        trusted index."""
        threshold = self._searchers.ann_threshold
        if threshold is None:
            return
        for key, count in self.vector_counts().items():
            if count < threshold:
                continue
            self._with_searcher(key, lambda index: None)

    def get(self, memory_id: str) -> MemoryRecord | None:
        rows = self._read(f"{SELECT} WHERE m.id = ?", (memory_id,))
        return row_to_record(rows[0]) if rows else None

    def _get_many(self, ids: list[str]) -> dict[str, MemoryRecord]:
        found: dict[str, MemoryRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"{SELECT} WHERE m.id IN ({marks})", chunk):
                record = row_to_record(row)
                found[record.id] = record
        return found

    def _where(self, node: Node | None, include_expired: bool) -> tuple[str, list[Any]]:
        where, params = compile_sql(node, SQLITE)
        if not include_expired:
            where += " AND (m.expiration_date IS NULL OR m.expiration_date >= ?)"
            params.append(today())
        return where, params

    def list(
        self, node: Node | None, limit: int | None = None, include_expired: bool = True
    ) -> list[MemoryRecord]:
        where, params = self._where(node, include_expired)
        sql = f"{SELECT} WHERE {where} ORDER BY m.created_at DESC, m.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [row_to_record(row) for row in self._read(sql, params)]

    def records(self, ids: list[str]) -> dict[str, MemoryRecord]:
        return self._get_many(ids)

    def search_ids(
        self,
        query: np.ndarray,
        embedder_key: str,
        node: Node | None,
        top_k: int,
        threshold: float | None = None,
        include_expired: bool = True,
        *,
        candidates: bool = False,  # exact or approximate, SQLite's search is cheap enough
    ) -> list[tuple[str, float]]:
        return self._with_searcher(embedder_key, lambda index: self._search_in(
            index, query, node, top_k, threshold, include_expired))

    def _with_searcher(self, embedder_key: str, use: Callable[[Any], T]) -> T:
        """`use` of the searcher of one embedder, under the store's lock; an index build the
        searcher needs first is waited for off the lock."""
        while True:
            with self._lock:
                index = self._searchers.searcher(embedder_key)
                if index is not None:
                    return use(index)
            self._searchers.wait_for_build(embedder_key)

    def _search_in(self, index: Any, query: np.ndarray, node: Node | None, top_k: int,
                   threshold: float | None, include_expired: bool) -> list[tuple[str, float]]:
        with self._lock:
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
                    "AND expiration_date < ?", (today(),))}
            return index.search(query, entity_constraints(node), top_k, threshold, allowed,
                                excluded)

    def prime_keyword_statistics(self) -> None:
        self._keyword.prime()

    def keyword_ids(
        self, query: str, node: Node | None, top_k: int, include_expired: bool = True,
    ) -> list[tuple[str, float]]:
        where, params = self._where(node, include_expired)
        return self._keyword.ids(query, where, params, top_k)

    def _keyword_figures(self) -> tuple[int, float]:
        row = self._read(
            "SELECT count(*), coalesce(sum(length(keywords) - length(replace(keywords, ' ', '')) "
            "+ 1) FILTER (WHERE keywords <> ''), 0) FROM memories")[0]
        return int(row[0]), float(row[1])

    def neighbours(self, ids: list[str], reach: int = 1
                   ) -> dict[str, tuple[str | None, str | None]]:
        near: dict[str, tuple[str | None, str | None]] = {}
        wanted = list(ids)
        for _ in range(reach):
            near.update(self._adjacent(wanted))
            wanted = [n for pair in near.values() for n in pair
                      if n is not None and n not in near]
            if not wanted:
                break
        return near

    def _adjacent(self, ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
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
        return [JournalEntry.from_row(r) for r in self._read(JOURNAL_SQL, (after_seq, limit))]

    def last_seq(self) -> int:
        with self._lock:
            return sync_state(self._conn)[0]

    def counts(self) -> dict[str, int]:
        return dict(self._read(
            "SELECT namespace, count(*) FROM memories GROUP BY namespace ORDER BY namespace"))

    def vector_counts(self) -> dict[str, int]:
        return dict(self._read("SELECT embedder_key, count(*) FROM vectors GROUP BY embedder_key"))

    def entities(self) -> list[dict[str, Any]]:
        return entity_summaries(self._read)
