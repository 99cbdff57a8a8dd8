"""PostgresStore: the Store on PostgreSQL + pgvector (see the package doc for the design)."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool, PoolTimeout

from memvault.embed.base import EmbedderIdentity
from memvault.errors import InvalidInput, StoreError
from memvault.store.base import (
    AddOutcome,
    Store,
    chain_neighbours,
    check_bulk_vectors,
    entity_summaries,
    merge_update,
    plan_adds,
)
from memvault.store.filter_sql import PostgresDialect, compile_sql
from memvault.store.keywords import KeywordTokenizer
from memvault.store.postgres import hnsw, postings, scope
from memvault.store.postgres.codec import register_vector
from memvault.store.postgres.connections import (
    PostgresTarget,
    TimedConnection,
    check_pooled,
    connect_kwargs,
    driver_errors,
    no_deadline,
)
from memvault.store.postgres.copy import copy_journal, copy_memories, copy_vectors
from memvault.store.postgres.keyword import KeywordRanking
from memvault.store.postgres.schema import (
    JOURNAL_COLUMNS,
    MIGRATION_LOCK,
    SCHEMA,
    SELECT,
    VECTOR_FKS,
    copy_row,
    enable_pgvector,
    migrate,
    read_server_identity,
    row_to_record,
)
from memvault.store.postgres.snapshot import PostgresSnapshot
from memvault.store.postgres.statements import NEIGHBOURS_SQL
from memvault.store.postgres.vector_search import VectorSearch
from memvault.store.records import (
    JournalEntry,
    MemoryRecord,
    MetaKey,
    StoreMeta,
    utc_now,
)

log = logging.getLogger("memvault.store.postgres")


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


class PostgresStore(Store):
    backend = "postgres"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        ef_search: int = 200,
        min_connections: int = 1,
        max_connections: int = 8,
    ) -> None:
        self.url = url
        self.timeout = float(timeout)
        self.ef_search = int(ef_search)
        self.target = PostgresTarget(url)
        self._search_path = SCHEMA
        self._iterative_scan = True
        self.dialect = PostgresDialect()
        self.keywords = KeywordTokenizer()
        self._keyword = KeywordRanking(self._read, self.last_seq, self.keywords)
        self.server: dict[str, Any] = {}
        self.vector_search = VectorSearch(self._connection, self._where, self.embedders,
                                          self.ef_search)
        self.last_bulk_load: dict[str, Any] = {}
        self._deferring_index = False
        self._bootstrap()
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=min_connections,
            max_size=max_connections,
            kwargs=connect_kwargs(self.timeout),
            connection_class=TimedConnection,
            configure=self._configure,
            check=check_pooled,
            timeout=self.timeout,
            # Give up a background reconnection attempt soon: the next request starts a fresh
            # one at once, so a database that comes back is used without long backoff waits.
            reconnect_timeout=max(5.0, 2 * self.timeout),
            name=f"memvault-{self.target.database}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=self.timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise self.target.unavailable(exc, "opening the connection pool") from None

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"SET search_path TO {self._search_path}")
        conn.execute(f"SET statement_timeout = {int(self.timeout * 1000)}")
        conn.execute(f"SET hnsw.ef_search = {self.ef_search}")
        if self._iterative_scan:
            # Filtered searches keep walking the graph until top_k rows pass the filter.
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
        register_vector(conn)
        if isinstance(conn, TimedConnection):
            conn.deadline = self.timeout

    def _connect_plain(self, deadline: float | None) -> TimedConnection:
        """One connection outside the pool (bootstrap, snapshots)."""
        try:
            conn = TimedConnection.connect(self.url, **connect_kwargs(self.timeout))
        except psycopg.Error as exc:
            raise self.target.unavailable(exc, "connecting") from None
        conn.deadline = deadline
        return conn

    def _bootstrap(self) -> None:
        """Enable pgvector, migrate and read the server's identity on one plain connection.

        The extension must exist before the pool opens: the pool's configure step registers the
        `vector` type, which fails on every connection if the type is missing.
        """
        conn = self._connect_plain(self.timeout)
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                setup = enable_pgvector(conn, self.target)
                self._search_path = setup.search_path
                self._iterative_scan = setup.iterative_scan
                self.dialect = setup.dialect
                conn.execute(f"SET search_path TO {self._search_path}")
                conn.deadline = None  # a migration may take long; its DDL is transactional
                migrate(conn, self.target)
                conn.deadline = self.timeout
                self.server = read_server_identity(conn, self.target)
            finally:
                if not conn.closed:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        except psycopg.OperationalError as exc:
            raise self.target.unavailable(exc, "opening the store") from None
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open the memvault store at {self.target.describe()}: "
                f"{self.target.scrub(str(exc))}"
            ) from None
        finally:
            conn.close()

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self, *, long: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; driver errors become memvault errors. `long` lifts deadlines."""
        doing = "running a long operation" if long else "serving a request"
        with driver_errors(self.target, doing):
            try:
                with self._pool.connection() as conn:
                    if long:
                        with no_deadline(conn, int(self.timeout * 1000)):
                            yield conn
                    else:
                        yield conn
            except PoolTimeout as exc:
                raise self.target.unavailable(exc, "waiting for a connection") from None

    @contextmanager
    def _write(self, *, long: bool = False) -> Iterator[tuple[psycopg.Cursor[Any], int]]:
        """One write transaction holding the journal counter lock; yields the last seq."""
        with self._connection(long=long) as conn, conn.transaction(), conn.cursor() as cur:
            row = cur.execute("SELECT seq FROM journal_counter FOR UPDATE").fetchone()
            assert row is not None
            yield cur, int(row[0])

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()

    def meta(self) -> StoreMeta:
        meta = StoreMeta.from_values(dict(self._read("SELECT key, value FROM meta")),
                                     backend=self.backend, location=self.target.url)
        # What this process is connected to now, beside what the store recorded at creation.
        meta.extra["pg_connected"] = dict(self.server)
        return meta

    def set_meta(self, key: str, value: Any) -> None:
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO meta VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, Json(value)),
            )

    def get_meta(self, key: str) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def register_embedder(self, identity: EmbedderIdentity) -> None:
        with self._connection(long=True) as conn, conn.transaction():
            conn.execute(
                "INSERT INTO embedders VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING",
                (identity.key, Json(identity.to_json()), utc_now()),
            )
            if not self._deferring_index:
                conn.execute(hnsw.index_sql(identity.key, identity.dims,
                                                  if_not_exists=True))

    @staticmethod
    def hnsw_index_name(key: str) -> str:
        return hnsw.index_name(key)

    def embedders(self) -> dict[str, EmbedderIdentity]:
        return {
            key: EmbedderIdentity.from_json(identity)
            for key, identity in self._read("SELECT key, identity FROM embedders")
        }

    def set_active_embedder(self, key: str) -> None:
        if key not in self.embedders():
            raise StoreError(f"embedder {key} is not registered in this store")
        self.set_meta(MetaKey.ACTIVE_EMBEDDER, key)

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
        with self._write(long=len(records) > 1000) as (cur, last):
            plan = plan_adds(records, self._existing_hashes(cur, records), last + 1, actor)
            fresh = [records[row] for row in plan.rows]
            copy_memories(cur, fresh, self.keywords)
            copy_vectors(cur, [r.id for r in fresh], embedder_key, vectors[plan.rows],
                         "vectors")
            copy_journal(cur, plan.entries)
        return plan.outcomes

    @staticmethod
    def _existing_hashes(
        cur: psycopg.Cursor[Any], records: list[MemoryRecord]
    ) -> dict[tuple[str, str], str]:
        hashes = sorted({r.hash for r in records})
        rows = cur.execute(
            "SELECT namespace, hash, id FROM memories WHERE hash = ANY(%s)", (hashes,)
        ).fetchall()
        return {(ns, h): i for ns, h, i in rows}

    def update(
        self,
        record: MemoryRecord,
        vector: np.ndarray | None,
        embedder_key: str,
        actor: str | None,
        fields: Collection[str] | None = None,
    ) -> JournalEntry:
        with self._write() as (cur, last):
            row = cur.execute(f"{SELECT} WHERE m.id = %s", (record.id,)).fetchone()
            if row is None:
                raise InvalidInput(f"memory {record.id} does not exist")
            before = row_to_record(row)
            record = merge_update(before, record, fields, vector)
            params = copy_row(record, self.keywords)
            cur.execute(
                "UPDATE memories SET memory=%s, hash=%s, metadata=%s, user_id=%s, agent_id=%s, "
                "run_id=%s, actor_id=%s, role=%s, namespace=%s, created_at=%s, updated_at=%s, "
                "expiration_date=%s, memory_type=%s, keywords=%s WHERE id=%s",
                (params[1], params[2], Json(params[3]) if params[3] else None, *params[4:],
                 record.id),
            )
            if vector is not None:
                cur.execute("DELETE FROM vectors WHERE memory_id = %s", (record.id,))
                cur.execute(
                    "INSERT INTO vectors VALUES (%s, %s, %b)",
                    (record.id, embedder_key, np.asarray(vector, dtype=np.float32)),
                )
            entry = JournalEntry(last + 1, "UPDATE", record.id, record.updated_at, actor,
                                 before.to_dict(), record.to_dict())
            copy_journal(cur, [entry])
        return entry

    def delete(self, ids: list[str], actor: str | None) -> list[JournalEntry]:
        if not ids:
            return []
        entries: list[JournalEntry] = []
        with self._write(long=len(ids) > 1000) as (cur, last):
            now = utc_now()
            rows = cur.execute(f"{SELECT} WHERE m.id = ANY(%s) ORDER BY array_position(%s, m.id)",
                               (ids, ids)).fetchall()
            for offset, row in enumerate(rows, start=1):
                record = row_to_record(row)
                entries.append(JournalEntry(last + offset, "DELETE", record.id, now, actor,
                                            record.to_dict(), None))
            cur.execute("DELETE FROM memories WHERE id = ANY(%s)", (ids,))
            copy_journal(cur, entries)
        return entries

    def put_vectors(self, ids: list[str], vectors: np.ndarray, embedder_key: str) -> None:
        if len(ids) != len(vectors):
            raise StoreError(f"{len(ids)} ids but {len(vectors)} vectors")
        if not ids:
            return
        with self._connection(long=True) as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE mv_put (memory_id TEXT COLLATE \"C\", vector vector) "
                        "ON COMMIT DROP")
            copy_vectors(cur, ids, embedder_key, vectors, "mv_put")
            cur.execute(
                "INSERT INTO vectors (memory_id, embedder_key, vector) "
                "SELECT memory_id, %s, vector FROM mv_put "
                "ON CONFLICT (memory_id, embedder_key) DO UPDATE SET vector = excluded.vector",
                (embedder_key,),
            )

    def bulk_load(
        self,
        records: list[MemoryRecord],
        vectors: dict[str, np.ndarray],
        *,
        journal: bool = False,
        actor: str | None = None,
    ) -> int:
        known = self.embedders()
        check_bulk_vectors(records, vectors, set(known))
        if not records:
            return 0
        ids = [r.id for r in records]
        started = time.perf_counter()
        phases: dict[str, float] = {}
        with self._write(long=True) as (cur, last):
            rebuild = len(records) >= hnsw.BULK_REINDEX_MIN_ROWS or self._deferring_index
            if rebuild:
                for key in vectors:
                    cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(
                        sql.Identifier(hnsw.index_name(key))))
                for name in VECTOR_FKS:
                    cur.execute(f"ALTER TABLE vectors DROP CONSTRAINT {name}")
            # Into an empty store the postings' key is built once after the COPY; into a
            # large one (a restore's later batches) the key is kept, not built again whole.
            fresh_postings = len(records) >= hnsw.BULK_REINDEX_MIN_ROWS and cur.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM memories)").fetchone() == (True,)
            if fresh_postings:
                postings.drop_primary_key(cur, SCHEMA)
            copy_memories(cur, records, self.keywords)
            for key, matrix in vectors.items():
                copy_vectors(cur, ids, key, matrix, "vectors")
            if journal:
                now = utc_now()
                copy_journal(cur, [
                    JournalEntry(last + 1 + i, "ADD", r.id, now, actor, None, r.to_dict())
                    for i, r in enumerate(records)
                ])
            if rebuild:
                for fk in VECTOR_FKS.values():
                    cur.execute(f"ALTER TABLE vectors ADD {fk}")
            if fresh_postings:
                postings.restore_primary_key(cur, SCHEMA)
            phases["copy_s"] = time.perf_counter() - started
            if rebuild and not self._deferring_index:
                for key in vectors:
                    hnsw.build_index(cur, key, known[key].dims)
                phases["index_s"] = time.perf_counter() - started - phases["copy_s"]
            if rebuild:
                # Fresh statistics, or the planner may still think the table is tiny and sort
                # every vector instead of walking the index.
                cur.execute("ANALYZE memories")
                cur.execute("ANALYZE vectors")
        if rebuild:
            # Outside the load's transaction: pages marked all-visible let a keyword search
            # read its postings from their key alone (until then each one is also fetched
            # from the table: twice the time), and autovacuum has nothing left to do in the
            # first minutes of searches.
            # The load is committed: a VACUUM that fails loses nothing (autovacuum does the
            # same later), so it is logged, not raised as a failed load.
            started_vacuum = time.perf_counter()
            try:
                with self._connection(long=True) as conn:
                    conn.execute(f"VACUUM (ANALYZE) memories, vectors, {postings.TABLE}")
            except StoreError as exc:
                log.warning("the %d memories are loaded, but VACUUM after the load failed "
                            "(keyword searches are slower until autovacuum runs): %s",
                            len(records), exc)
            phases["vacuum_s"] = time.perf_counter() - started_vacuum
        phases["total_s"] = time.perf_counter() - started
        # Kept for operators' logs and the bench: where a large restore spends its time.
        self.last_bulk_load = {"rows": len(records), "index_rebuilt": "index_s" in phases,
                               **phases}
        log.info("bulk load of %d memories: %s", len(records),
                 ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
        return len(records)

    @contextmanager
    def deferring_search_index(self) -> Iterator[None]:
        """Drop the HNSW indexes and keep them out while a restore loads: every batch then
        goes in without graph inserts, and searches meanwhile are exact (a full ranking)."""
        with self._connection(long=True) as conn:
            for key in self.embedders():
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(
                    sql.Identifier(hnsw.index_name(key))))
        self._deferring_index = True
        try:
            yield
        finally:
            self._deferring_index = False

    def build_search_indexes(self) -> None:
        """Build every missing (or invalid) HNSW index without blocking writes (CONCURRENTLY),
        then refresh planner statistics so searches use them."""
        with self._connection(long=True) as conn:
            hnsw.build_missing(conn, SCHEMA, self.embedders())

    def stale_scope_copies(self) -> int:
        with self._connection(long=True) as conn:
            row = conn.execute(scope.stale_sql(SCHEMA)).fetchone()
        return int(row[0]) if row else 0

    def advance_seq(self, seq: int) -> None:
        with self._write() as (cur, last):
            if seq > last:
                cur.execute("UPDATE journal_counter SET seq = %s", (seq,))

    @contextmanager
    def snapshot(self) -> Iterator[PostgresSnapshot]:
        # A REPEATABLE READ transaction on its own connection: a frozen view of every table
        # while writers go on (MVCC, no locks beyond ACCESS SHARE).
        conn = self._connect_plain(None)
        try:
            conn.execute(f"SET search_path TO {self._search_path}")
            register_vector(conn)
            conn.autocommit = False
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            row = conn.execute("SELECT seq FROM journal_counter").fetchone()
            assert row is not None
            yield PostgresSnapshot(conn, int(row[0]))
        except psycopg.OperationalError as exc:
            raise self.target.unavailable(exc, "reading a snapshot") from None
        finally:
            conn.close()

    def get(self, memory_id: str) -> MemoryRecord | None:
        rows = self._read(f"{SELECT} WHERE m.id = %s", (memory_id,))
        return row_to_record(rows[0]) if rows else None

    def _where(self, node: Any, include_expired: bool) -> tuple[str, list[Any]]:
        where, params = compile_sql(node, self.dialect)
        if not include_expired:
            where += " AND (m.expiration_date IS NULL OR m.expiration_date >= %s)"
            params.append(_today())
        return where, params

    def list(
        self, node: Any, limit: int | None = None, include_expired: bool = True
    ) -> list[MemoryRecord]:
        where, params = self._where(node, include_expired)
        query = f"{SELECT} WHERE {where} ORDER BY m.created_at DESC, m.id"
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        return [row_to_record(row) for row in self._read(query, params)]

    def records(self, ids: list[str]) -> dict[str, MemoryRecord]:
        if not ids:
            return {}
        found = (row_to_record(row) for row in self._read(f"{SELECT} WHERE m.id = ANY(%s)",
                                                          [list(ids)]))
        return {record.id: record for record in found}

    def search_ids(
        self,
        query: np.ndarray,
        embedder_key: str,
        node: Any,
        top_k: int,
        threshold: float | None = None,
        include_expired: bool = True,
        *,
        candidates: bool = False,
    ) -> list[tuple[str, float]]:
        return self.vector_search.ids(query, embedder_key, node, top_k, threshold,
                                      include_expired, candidates)

    def prime_keyword_statistics(self) -> None:
        self._keyword.prime()

    def keyword_ids(
        self, query: str, node: Any, top_k: int, include_expired: bool = True,
    ) -> list[tuple[str, float]]:
        where, params = self._where(node, include_expired)
        return self._keyword.ids(query, where, params, top_k)

    def neighbours(self, ids: list[str], reach: int = 1
                   ) -> dict[str, tuple[str | None, str | None]]:
        near: dict[str, tuple[str | None, str | None]] = {}
        if ids:
            # Chains that overlap agree: the order they come from is total.
            for memory_id, before, after in self._read(NEIGHBOURS_SQL,
                                                       [reach, reach, list(ids)]):
                near.update(chain_neighbours(memory_id, before, after, reach))
        return near

    def history(self, memory_id: str) -> list[JournalEntry]:
        rows = self._read(
            f"SELECT {JOURNAL_COLUMNS} FROM journal WHERE memory_id = %s ORDER BY seq",
            (memory_id,))
        return [JournalEntry.from_row(r) for r in rows]

    def journal(self, after_seq: int = 0, limit: int = 10_000) -> list[JournalEntry]:
        rows = self._read(
            f"SELECT {JOURNAL_COLUMNS} FROM journal WHERE seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit))
        return [JournalEntry.from_row(r) for r in rows]

    def last_seq(self) -> int:
        rows = self._read("SELECT seq FROM journal_counter")
        return int(rows[0][0])

    def counts(self) -> dict[str, int]:
        return {ns: int(n) for ns, n in self._read(
            "SELECT namespace, count(*) FROM memories GROUP BY namespace ORDER BY namespace")}

    def vector_counts(self) -> dict[str, int]:
        return {k: int(n) for k, n in self._read(
            "SELECT embedder_key, count(*) FROM vectors GROUP BY embedder_key")}

    def entities(self) -> list[dict[str, Any]]:
        return entity_summaries(self._read)

    def server_identity(self) -> dict[str, Any]:
        """The live identity of the connected server (system identifier, address, database)."""
        with self._connection() as conn:
            return read_server_identity(conn, self.target)

