"""mem0's pgvector table as the watcher reads it: who it is (cluster, database, table, vector
dimension), a cheap fingerprint of its rows, each row's version, and rows by id.

Every session is read-only on the server's side (`default_transaction_read_only`), so the
watcher cannot write mem0's table even through a bug; a role with SELECT alone is enough
(docs/guard-mem0.md). A row's version is its `xmin`: PostgreSQL gives every inserted or
updated row version a new one, so (id, xmin) pairs show every add, update and delete, and a
table put back by a dump shows as all rows changed (their payloads are then compared).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from memvault.config import redact_url
from memvault.errors import MemvaultError

log = logging.getLogger("memvault.watch")


class Unreachable(MemvaultError):
    """mem0's database cannot be reached or read (StoreUnreachable)."""

    code = "store_unreachable"


class NotMem0Table(MemvaultError):
    code = "not_a_mem0_table"


def tried(dsn: str) -> str:
    """What a connection attempt used, for people: host, port, database, user, and whether a
    password was given (never its value)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
    except Exception:
        return redact_url(dsn)
    password = "set" if params.get("password") else "not set"
    return (f"host={params.get('host', '(default)')} port={params.get('port', '5432')} "
            f"database={params.get('dbname', '(default)')} user={params.get('user', '(default)')}"
            f" password={password}")


@dataclass(frozen=True)
class TableIdentity:
    """Who the watched table is. `table_oid` None: the database has no such table."""

    system_identifier: str | None  # None when the role may not read pg_control_system()
    database: str
    database_oid: int
    table_oid: int | None
    dims: int | None  # the vector column's dimension, None when untyped or no table

    @property
    def store_id(self) -> str:
        return (f"mem0:pg-{self.system_identifier or 'unknown'}:db-{self.database_oid}:"
                f"table-{self.table_oid}")

    def describe(self) -> str:
        table = f"table oid {self.table_oid}" if self.table_oid else "no table"
        return (f"cluster {self.system_identifier or '(system id not readable)'}, database "
                f"{self.database} (oid {self.database_oid}), {table}, vector({self.dims})")

    def same_place(self, other_store_id: str) -> bool:
        return other_store_id == self.store_id


@dataclass(frozen=True)
class Fingerprint:
    """count(*) and an order-independent digest of every (id, xmin): equal fingerprints mean
    no row was added, changed or deleted (one row read, the table scanned on the server)."""

    count: int
    digest: int


@dataclass(frozen=True)
class Mem0Row:
    id: str
    payload: Any
    vector: np.ndarray | None


class WatchedTable:
    """Reads one mem0 collection. One connection is kept and re-opened after a failure."""

    def __init__(self, dsn: str, collection: str = "memories", timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.collection = collection
        self.timeout = timeout
        self._conn: Any = None

    @property
    def location(self) -> str:
        return f"{redact_url(self.dsn)} table {self.collection}"

    def _sql_table(self) -> Any:
        from psycopg import sql

        schema, _, name = self.collection.rpartition(".")
        return sql.Identifier(schema, name) if schema else sql.Identifier(name)

    def _connection(self) -> Any:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=max(1, int(self.timeout)),
                                   autocommit=True)
        except psycopg.Error as exc:
            raise Unreachable(
                f"cannot connect to mem0's database ({tried(self.dsn)}): "
                f"{redact_url(str(exc).strip())}",
                hint="check --dsn: host, port, database name, user and password of the "
                "database mem0 uses now (docker compose: the pgvector service's env)") from None
        try:
            # Read-only on the server's side: nothing this session runs can write mem0's data.
            conn.execute("SET default_transaction_read_only = on")
            conn.execute("SELECT set_config('statement_timeout', %s, false)",
                         (f"{int(self.timeout * 6)}s",))
        except psycopg.Error as exc:
            conn.close()
            raise Unreachable(f"mem0's database ({tried(self.dsn)}) refused the session "
                              f"settings: {exc}") from None
        self._conn = conn
        self._vector_ready = False
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg

        conn = self._connection()
        try:
            return list(conn.execute(query, params).fetchall())
        except psycopg.OperationalError as exc:
            self.close()
            raise Unreachable(f"lost mem0's database ({tried(self.dsn)}): "
                              f"{redact_url(str(exc).strip())}") from None
        except psycopg.Error as exc:
            raise Unreachable(f"mem0's database ({tried(self.dsn)}) refused a read of "
                              f"{self.collection}: {redact_url(str(exc).strip())}",
                              hint="the watcher needs SELECT on the table (GRANT SELECT ON "
                              f"{self.collection} TO <role>)") from None

    def identity(self) -> TableIdentity:
        import psycopg

        conn = self._connection()
        database, database_oid = self._run(
            "SELECT current_database(), oid FROM pg_database WHERE datname = "
            "current_database()")[0]
        try:
            system = str(conn.execute(
                "SELECT system_identifier FROM pg_control_system()").fetchone()[0])
        except psycopg.Error:  # not granted to this role: database and table still identify
            system = None
        found = self._run("SELECT to_regclass(%s)::oid", (self.collection,))[0][0]
        dims = None
        if found is not None:
            typmod = self._run(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s "
                "AND attname = 'vector' AND NOT attisdropped", (found,))
            if typmod and typmod[0][0].startswith("vector(") and typmod[0][0].endswith(")"):
                dims = int(typmod[0][0][7:-1])
            columns = {r[0] for r in self._run(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT "
                "attisdropped", (found,))}
            if not {"id", "payload", "vector"} <= columns:
                raise NotMem0Table(f"{self.collection} in {redact_url(self.dsn)} has columns "
                                   f"{', '.join(sorted(columns))}: not a mem0 pgvector table",
                                   hint="pass --collection with mem0's table name ('memories' "
                                   "for mem0's server, 'mem0' for the library)")
        return TableIdentity(system, str(database), int(database_oid),
                             int(found) if found is not None else None, dims)

    def fingerprint(self) -> Fingerprint:
        from psycopg import sql

        count, digest = self._run(sql.SQL(
            "SELECT count(*), coalesce(sum(hashtextextended(id::text || ':' || xmin::text, 0)),"
            " 0) FROM {}").format(self._sql_table()))[0]
        return Fingerprint(int(count), int(digest))

    def versions(self) -> dict[str, str]:
        """id -> xmin of every row."""
        from psycopg import sql

        return dict(self._run(sql.SQL("SELECT id::text, xmin::text FROM {}").format(
            self._sql_table())))

    def rows(self, ids: list[str], *, vectors: bool = True, batch: int = 5000
             ) -> Iterator[Mem0Row]:
        """The rows with these ids (those still present); vectors as float32 arrays, or None
        without `vectors` (a payload comparison needs no vector)."""
        from psycopg import sql

        from memvault.store.postgres.codec import register_vector

        conn = self._connection()
        if vectors and not self._vector_ready:
            register_vector(conn)
            self._vector_ready = True
        column = sql.SQL("vector" if vectors else "NULL")
        query = sql.SQL("SELECT id::text, payload, {} FROM {} WHERE id = ANY(%s::uuid[])"
                        ).format(column, self._sql_table())
        for start in range(0, len(ids), batch):
            for row_id, payload, vector in self._run(query, (ids[start:start + batch],)):
                yield Mem0Row(row_id, payload, None if vector is None
                              else np.asarray(vector, dtype=np.float32))
