"""The scope of each vector, beside it: its memory's user_id, agent_id and run_id copied into
`vectors` by triggers (whatever writes: store, COPY, a migration, an operator's SQL), and its
binary code (one bit per dimension, pgvector's `binary_quantize`) computed by PostgreSQL as a
generated column. One index per entity key holds (embedder, id) with the codes and memory ids,
so a search scoped to a small share of a large store ranks the scope's codes from that index
alone and re-scores the closest few with their vectors (vector_search.py), instead of walking
the HNSW graph past ninety-nine other tenants' memories for each of its own.

A copy can never widen a search: every search still checks its whole filter on the memories
it returns; the copy only narrows which vectors are looked at.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from memvault.store.postgres import hnsw
from memvault.store.postgres.connections import PostgresTarget
from memvault.store.records import ENTITY_KEYS

log = logging.getLogger("memvault.store.postgres")

CODE_COLUMN = "code"


def index_name(key: str) -> str:
    """The scope index of one entity key (user_id, agent_id, run_id)."""
    return f"vectors_scope_{key.removesuffix('_id')}"


def migration(schema: str) -> list[str]:
    """The columns and triggers; idempotent like every migration after the first. `backfill`
    fills the columns of the vectors already stored and builds the indexes."""
    entity = ", ".join(ENTITY_KEYS)
    copied = ", ".join(f"NEW.{key}" for key in ENTITY_KEYS)
    changed = " OR ".join(f"OLD.{key} IS DISTINCT FROM NEW.{key}" for key in ENTITY_KEYS)
    return [
        *(f"ALTER TABLE {schema}.vectors ADD COLUMN IF NOT EXISTS {key} TEXT COLLATE \"C\""
          for key in ENTITY_KEYS),
        # Any row written to vectors takes its scope from its memory, so no writer (and no
        # hand-edited UPDATE) can give a vector a scope its memory does not have.
        f"CREATE OR REPLACE FUNCTION {schema}.vectors_scope() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN SELECT {entity} INTO {copied} FROM {schema}.memories "
        "WHERE id = NEW.memory_id; RETURN NEW; END $$",
        f"DROP TRIGGER IF EXISTS vectors_scope ON {schema}.vectors",
        f"CREATE TRIGGER vectors_scope BEFORE INSERT OR UPDATE ON {schema}.vectors "
        f"FOR EACH ROW EXECUTE FUNCTION {schema}.vectors_scope()",
        # A memory given another scope takes its vectors along.
        f"CREATE OR REPLACE FUNCTION {schema}.vectors_follow_scope() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN UPDATE {schema}.vectors SET "
        + ", ".join(f"{key} = NEW.{key}" for key in ENTITY_KEYS)
        + " WHERE memory_id = NEW.id; RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS vectors_follow_scope ON {schema}.memories",
        f"CREATE TRIGGER vectors_follow_scope AFTER UPDATE OF {entity} ON {schema}.memories "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {schema}.vectors_follow_scope()",
    ]


def backfill(conn: psycopg.Connection[Any], schema: str, target: PostgresTarget) -> None:
    """Give every stored vector its scope and code, and build the scope indexes. The HNSW
    indexes are dropped first and built again after: each rewritten row would otherwise be
    inserted into the graph one at a time."""
    started = time.perf_counter()
    graphs = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND "
        "tablename = 'vectors' AND indexdef LIKE '%%USING hnsw%%'", (schema,)).fetchall()
    for name, _ in graphs:
        conn.execute(f"DROP INDEX {schema}.{name}")
    rows = conn.execute(
        f"UPDATE {schema}.vectors v SET " + ", ".join(f"{k} = m.{k}" for k in ENTITY_KEYS)
        + f" FROM {schema}.memories m WHERE m.id = v.memory_id").rowcount
    # Added after the copy: the table is written once more, whole, which also drops the old
    # row versions the UPDATE left.
    conn.execute(f"ALTER TABLE {schema}.vectors ADD COLUMN IF NOT EXISTS {CODE_COLUMN} "
                 "bit varying GENERATED ALWAYS AS (binary_quantize(vector)) STORED")
    for statement in index_statements(schema):
        conn.execute(statement)
    if graphs:
        # the largest dimension of the graphs to build sizes the memory for all of them
        row = conn.execute(
            f"SELECT max((identity->>'dims')::int) FROM {schema}.embedders").fetchone()
        dims = int(row[0]) if row and row[0] else 0
        conn.execute(f"SET LOCAL maintenance_work_mem = '{hnsw.work_mem_mb(rows, dims)}MB'")
        for _, definition in graphs:
            conn.execute(definition)
    conn.execute(f"ANALYZE {schema}.vectors")
    if rows > 0:
        log.info("copied the scope of %d vectors in %s (%.1fs, HNSW rebuilt)", rows,
                 target.describe(), time.perf_counter() - started)


def vacuum(conn: psycopg.Connection[Any], schema: str, target: PostgresTarget) -> None:
    """After the backfill committed (outside any transaction): the rewritten table's pages
    are marked all-visible, or every index-only scan of a scope index also fetches each row
    (a 1% user at 1M memories: 18 ms instead of 6) until autovacuum, which a rewrite does not
    prompt, happens by. A failure loses nothing and is logged."""
    try:
        conn.execute(f"VACUUM (ANALYZE) {schema}.vectors")
    except psycopg.Error as exc:
        log.warning("the scope columns of the vectors in %s are written, but VACUUM after "
                    "them failed (searches in a small scope are slower until autovacuum "
                    "runs): %s", target.describe(), exc)


def stale_sql(schema: str) -> str:
    """How many vectors carry another scope than their memory."""
    differs = " OR ".join(f"v.{key} IS DISTINCT FROM m.{key}" for key in ENTITY_KEYS)
    return (f"SELECT count(*) FROM {schema}.vectors v JOIN {schema}.memories m "
            f"ON m.id = v.memory_id WHERE {differs}")


def index_statements(schema: str) -> list[str]:
    """The scope index of each entity key: only rows that have that key."""
    return [f"CREATE INDEX IF NOT EXISTS {index_name(key)} ON {schema}.vectors "
            f"(embedder_key, {key}) INCLUDE ({CODE_COLUMN}, memory_id) WHERE {key} IS NOT NULL"
            for key in ENTITY_KEYS]
