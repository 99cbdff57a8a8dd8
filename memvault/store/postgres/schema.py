"""The memvault schema: its migrations, the column lists and the row <-> record mapping.

Text columns use the "C" collation and timestamps stay ISO text, and metadata is `json` (kept
verbatim, like SQLite's TEXT), so comparisons and round trips match the SQLite backend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Json

from memvault.errors import SchemaError, StoreError
from memvault.store.base import (
    SCHEMA_VERSION,
    check_schema_version,
    legacy_key_condition,
    rekeyed_namespaces,
)
from memvault.store.filter_sql import PostgresDialect
from memvault.store.keywords import KeywordTokenizer
from memvault.store.postgres import postings, scope
from memvault.store.postgres.connections import PostgresTarget
from memvault.store.records import MemoryRecord, utc_now

log = logging.getLogger("memvault.store.postgres")

SCHEMA = "memvault"
# Session advisory lock held while migrating, so replicas starting together migrate once.
MIGRATION_LOCK = int.from_bytes(
    hashlib.sha256(b"memvault:migrate").digest()[:8], "big", signed=True)

# Checked once per statement when re-added after a large bulk load, instead of once per row.
VECTOR_FKS = {
    "vectors_memory_fk": "CONSTRAINT vectors_memory_fk FOREIGN KEY (memory_id) "
                         f"REFERENCES {SCHEMA}.memories (id) ON DELETE CASCADE",
    "vectors_embedder_fk": "CONSTRAINT vectors_embedder_fk FOREIGN KEY (embedder_key) "
                           f"REFERENCES {SCHEMA}.embedders (key)",
}

MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.meta (key TEXT COLLATE \"C\" PRIMARY KEY, value JSON NOT NULL)",
        f"""CREATE TABLE {SCHEMA}.memories (
            id TEXT COLLATE "C" PRIMARY KEY,
            memory TEXT COLLATE "C" NOT NULL,
            hash TEXT COLLATE "C" NOT NULL,
            metadata JSON,
            user_id TEXT COLLATE "C", agent_id TEXT COLLATE "C", run_id TEXT COLLATE "C",
            actor_id TEXT COLLATE "C", role TEXT COLLATE "C",
            namespace TEXT COLLATE "C" NOT NULL,
            created_at TEXT COLLATE "C" NOT NULL,
            updated_at TEXT COLLATE "C" NOT NULL,
            expiration_date TEXT COLLATE "C",
            memory_type TEXT COLLATE "C"
        )""",
        f"CREATE UNIQUE INDEX memories_namespace_hash ON {SCHEMA}.memories (namespace, hash)",
        f"CREATE INDEX memories_user ON {SCHEMA}.memories (user_id)",
        f"CREATE INDEX memories_agent ON {SCHEMA}.memories (agent_id)",
        f"CREATE INDEX memories_run ON {SCHEMA}.memories (run_id)",
        f"CREATE INDEX memories_created ON {SCHEMA}.memories (created_at)",
        f"""CREATE TABLE {SCHEMA}.embedders (
            key TEXT COLLATE "C" PRIMARY KEY,
            identity JSON NOT NULL,
            created_at TEXT COLLATE "C" NOT NULL
        )""",
        f"""CREATE TABLE {SCHEMA}.vectors (
            memory_id TEXT COLLATE "C" NOT NULL,
            embedder_key TEXT COLLATE "C" NOT NULL,
            vector vector NOT NULL,
            PRIMARY KEY (memory_id, embedder_key)
        )""",
        *(f"ALTER TABLE {SCHEMA}.vectors ADD {fk}" for fk in VECTOR_FKS.values()),
        f"""CREATE TABLE {SCHEMA}.journal (
            seq BIGINT PRIMARY KEY,
            op TEXT NOT NULL CHECK (op IN ('ADD', 'UPDATE', 'DELETE')),
            memory_id TEXT COLLATE "C" NOT NULL,
            before JSON,
            after JSON,
            ts TEXT COLLATE "C" NOT NULL,
            actor TEXT
        )""",
        f"CREATE INDEX journal_memory ON {SCHEMA}.journal (memory_id)",
        # One row: the last seq handed out. Locking it serializes writers (see module doc).
        f"""CREATE TABLE {SCHEMA}.journal_counter (
            one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
            seq BIGINT NOT NULL
        )""",
        f"INSERT INTO {SCHEMA}.journal_counter (seq) VALUES (0)",
    ],
    2: [],  # data only: rekey_namespaces
    # The keyword index: the normalized token string of each memory (store/keywords.py, the
    # same as SQLite's), split on spaces by the 'simple' configuration. Backfilled by
    # add_keywords before the index is built. Idempotent, like every step after 1: a store
    # whose version mark was lowered by hand migrates again.
    3: [f"ALTER TABLE {SCHEMA}.memories ADD COLUMN IF NOT EXISTS keywords "
        "TEXT COLLATE \"C\" NOT NULL DEFAULT ''",
        # neighbours(): the memories around one in its namespace, in creation order
        f"CREATE INDEX IF NOT EXISTS memories_namespace_created ON {SCHEMA}.memories "
        "(namespace, created_at, id)"],
    # What keyword searches rank by: each memory's stems with their counts (postings.py),
    # kept by triggers; backfilled by postings.backfill.
    4: postings.migration(SCHEMA),
    # Each vector's scope and binary code beside it, for searches in a small scope (scope.py);
    # backfilled by scope.backfill.
    5: scope.migration(SCHEMA),
}

COLUMNS = (
    "id", "memory", "hash", "metadata", "user_id", "agent_id", "run_id", "actor_id", "role",
    "created_at", "updated_at", "expiration_date", "memory_type",
)
INSERT_COLUMNS = (*COLUMNS[:9], "namespace", *COLUMNS[9:], "keywords")
INSERT_TYPES = ["text", "text", "text", "json", *["text"] * 11]
SELECT_COLUMNS = ", ".join(f"m.{c}" for c in COLUMNS)
SELECT = f"SELECT {SELECT_COLUMNS} FROM memories m"
JOURNAL_COLUMNS = "seq, op, memory_id, before, after, ts, actor"


def row_to_record(row: Sequence[Any]) -> MemoryRecord:
    return MemoryRecord(**dict(zip(COLUMNS, row, strict=True)))


def copy_row(record: MemoryRecord, tokenizer: KeywordTokenizer) -> tuple[Any, ...]:
    """The row of a record, its index tokens last."""
    return (
        record.id, record.memory, record.hash, record.metadata or None, record.user_id,
        record.agent_id, record.run_id, record.actor_id, record.role, record.namespace,
        record.created_at, record.updated_at, record.expiration_date, record.memory_type,
        tokenizer.document(record.memory),
    )


def migrate(conn: psycopg.Connection[Any], target: PostgresTarget) -> None:
    """Bring the schema up to SCHEMA_VERSION, one transaction per version."""
    tables = {r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (SCHEMA,))}
    version = 0
    if "meta" in tables:
        row = conn.execute(
            f"SELECT value::text FROM {SCHEMA}.meta WHERE key = 'schema_version'").fetchone()
        version = int(json.loads(row[0])) if row else 0
    check_schema_version(
        version, tables, f"schema {SCHEMA!r} of database {target.database}",
        "point MEMVAULT_DATABASE_URL at another database, or drop that schema",
    )
    for version_to in range(version + 1, SCHEMA_VERSION + 1):
        statements = MIGRATIONS.get(version_to)
        if statements is None:
            raise SchemaError(f"no PostgreSQL migration to schema version {version_to}")
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
            if version_to == 2:
                rekey_namespaces(conn, target)
            if version_to == 3:
                add_keywords(conn, target)
            if version_to == 4:
                postings.backfill(conn, SCHEMA, target)
            if version_to == 5:
                scope.backfill(conn, SCHEMA, target)
            if version_to == 1:
                identity = read_server_identity(conn, target)
                initial = {
                    "store_id": str(uuid.uuid4()),
                    "lineage_id": str(uuid.uuid4()),
                    "created_at": utc_now(),
                    # Where and on which cluster the store was created: a database that
                    # was recreated or swapped shows a different value than it recorded.
                    "pg_system_identifier": identity["system_identifier"],
                    "pg_host": identity["host"],
                    "pg_port": identity["port"],
                    "pg_database": identity["database"],
                }
                for key, value in initial.items():
                    conn.execute(f"INSERT INTO {SCHEMA}.meta VALUES (%s, %s)",
                                 (key, Json(value)))
            conn.execute(
                f"INSERT INTO {SCHEMA}.meta VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (Json(version_to),),
            )
            log.info("migrated the store in %s to schema version %d",
                     target.describe(), version_to)
    if version < 5:  # the backfill rewrote vectors
        scope.vacuum(conn, SCHEMA, target)


def add_keywords(conn: psycopg.Connection[Any], target: PostgresTarget) -> None:
    """Give every stored memory its index tokens (postings.backfill indexes them)."""
    tokenizer = KeywordTokenizer()
    rows = conn.execute(f"SELECT id, memory FROM {SCHEMA}.memories").fetchall()
    with conn.cursor() as cur:
        cur.executemany(f"UPDATE {SCHEMA}.memories SET keywords = %s WHERE id = %s",
                        [(tokenizer.document(text), memory_id) for memory_id, text in rows])
    if rows:
        log.info("tokenized the %d memories in %s", len(rows), target.describe())


def rekey_namespaces(conn: psycopg.Connection[Any], target: PostgresTarget) -> None:
    """Rewrite the namespace of rows whose ids hold '%' or '/' in the escaped encoding. Via
    a unique stand-in first: a new key may equal another row's not yet rewritten old key."""
    rows = conn.execute(
        f"SELECT id, user_id, agent_id, run_id, namespace FROM {SCHEMA}.memories WHERE "
        + legacy_key_condition("strpos")).fetchall()
    changes = rekeyed_namespaces(rows)
    update = f"UPDATE {SCHEMA}.memories SET namespace = %s WHERE id = %s"
    with conn.cursor() as cur:
        cur.executemany(update, [("\x01" + memory_id, memory_id)
                                 for _, memory_id in changes])
        cur.executemany(update, changes)
    if changes:
        log.info("re-keyed the namespace of %d memories in %s (ids holding '%%' or '/')",
                 len(changes), target.describe())


def read_server_identity(
    conn: psycopg.Connection[Any], target: PostgresTarget
) -> dict[str, Any]:
    """The connected server's identity: system identifier, address, database."""
    system_identifier: str | None
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        system_identifier = str(row[0]) if row else None
    except psycopg.errors.InsufficientPrivilege:
        log.warning("user %s may not call pg_control_system(); the store cannot record the "
                    "cluster's system identifier (GRANT pg_monitor to fix)", target.user)
        system_identifier = None
    row = conn.execute(
        "SELECT current_database(), inet_server_addr()::text, inet_server_port()"
    ).fetchone()
    assert row is not None
    return {
        "system_identifier": system_identifier,
        "host": conn.info.host,
        "port": int(conn.info.port) if str(conn.info.port).isdigit() else conn.info.port,
        "database": row[0],
        "server_addr": row[1],
    }


@dataclass(frozen=True)
class PgvectorSetup:
    """What the connected pgvector and server allow: where `vector` lives, whether filtered
    searches can keep walking the index, and the collation for case-insensitive filters."""

    search_path: str
    iterative_scan: bool
    dialect: PostgresDialect


def enable_pgvector(conn: psycopg.Connection[Any], target: PostgresTarget) -> PgvectorSetup:
    """Create the extension if missing and read what this pgvector and server support."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot enable pgvector in database {target.database}: {exc}",
            hint="install pgvector on the server and run `CREATE EXTENSION vector` as a "
                 "superuser, or grant this user the right to create it",
        ) from None
    row = conn.execute(
        "SELECT n.nspname, e.extversion FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    ).fetchone()
    assert row is not None
    ext_schema, version = row
    search_path = sql.SQL(", ").join(
        [sql.Identifier(SCHEMA), sql.Identifier(ext_schema)]).as_string(conn)
    iterative_scan = True
    dialect = PostgresDialect()
    parts = tuple(int(p) for p in str(version).split(".")[:2] if p.isdigit())
    if parts < (0, 7):
        raise StoreError(f"pgvector {version} has no binary quantization; memvault needs "
                         ">= 0.7 (>= 0.8 recommended)",
                         hint="upgrade pgvector (ALTER EXTENSION vector UPDATE)")
    if parts < (0, 8):
        log.warning("pgvector %s has no iterative index scans: filtered searches may return "
                    "fewer than top_k results; upgrade to >= 0.8", version)
        iterative_scan = False
    server_version = conn.info.server_version
    if server_version >= 180000:
        dialect = PostgresDialect(casefold_collation="pg_unicode_fast")
    elif server_version >= 170000:
        dialect = PostgresDialect(casefold_collation="pg_c_utf8")
    return PgvectorSetup(search_path, iterative_scan, dialect)
