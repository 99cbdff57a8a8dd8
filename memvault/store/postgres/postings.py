"""The keyword postings: one row per (stem, memory) with the stem's count in that memory and
the memory's length in stems, kept by triggers on `memories` in the writing statement's own
transaction, whatever wrote the rows (add, update, delete, COPY, a migration, an operator's
SQL). A keyword search reads its stems' postings from the primary key alone (an index-only
range scan) and scores BM25 from them, instead of fetching and splitting every matching row.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from memvault.store.postgres.connections import PostgresTarget

log = logging.getLogger("memvault.store.postgres")

TABLE = "keyword_postings"
PRIMARY_KEY = (f"CONSTRAINT {TABLE}_pkey PRIMARY KEY (stem, memory_id) "
               "INCLUDE (tf, length)")


def _postings_of(schema: str, rows: str) -> str:
    """The postings of the memories in `rows` (a table or transition table with id and
    keywords). OFFSET 0 keeps the split computed once per memory."""
    return (
        f"INSERT INTO {schema}.{TABLE} (stem, memory_id, tf, length) "
        "SELECT w.stem, r.id, count(*), min(cardinality(x.stems)) "
        f"FROM {rows} r CROSS JOIN LATERAL "
        "(SELECT string_to_array(r.keywords, ' ') AS stems OFFSET 0) x "
        "CROSS JOIN LATERAL unnest(x.stems) AS w(stem) GROUP BY w.stem, r.id")


def _drop_postings_of(schema: str, rows: str) -> str:
    return (
        f"DELETE FROM {schema}.{TABLE} p USING {rows} r "
        "CROSS JOIN LATERAL unnest(string_to_array(r.keywords, ' ')) AS w(stem) "
        "WHERE p.stem = w.stem AND p.memory_id = r.id")


def migration(schema: str) -> list[str]:
    """The table and its triggers; idempotent like every migration after
    the first. The backfill is `backfill`. Rows whose (id, keywords) an UPDATE left alone
    (a namespace rekey, a metadata edit) keep their postings."""
    changed_old = ("(SELECT id, keywords FROM old_rows EXCEPT "
                   "SELECT id, keywords FROM new_rows)")
    changed_new = ("(SELECT id, keywords FROM new_rows EXCEPT "
                   "SELECT id, keywords FROM old_rows)")
    bodies = {
        "insert": _postings_of(schema, "new_rows"),
        "delete": _drop_postings_of(schema, "old_rows"),
        "update": (f"{_drop_postings_of(schema, changed_old)}; "
                   f"{_postings_of(schema, changed_new)}"),
    }
    referencing = {"insert": "NEW TABLE AS new_rows", "delete": "OLD TABLE AS old_rows",
                   "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows"}
    statements = [
        f"""CREATE TABLE IF NOT EXISTS {schema}.{TABLE} (
            stem TEXT COLLATE "C" NOT NULL,
            memory_id TEXT COLLATE "C" NOT NULL,
            tf INTEGER NOT NULL,
            length INTEGER NOT NULL,
            {PRIMARY_KEY}
        )""",
    ]
    for event, body in bodies.items():
        statements += [
            f"CREATE OR REPLACE FUNCTION {schema}.keyword_postings_{event}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN NULL; END $$",
            f"DROP TRIGGER IF EXISTS keyword_postings_{event} ON {schema}.memories",
            f"CREATE TRIGGER keyword_postings_{event} AFTER {event.upper()} ON "
            f"{schema}.memories REFERENCING {referencing[event]} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {schema}.keyword_postings_{event}()",
        ]
    # The GIN index over each memory's tsvector the postings replace.
    statements.append(f"DROP INDEX IF EXISTS {schema}.memories_keywords")
    return statements


def backfill(conn: psycopg.Connection[Any], schema: str, target: PostgresTarget) -> None:
    """The postings of every stored memory (none yet, or all of them again), the key built
    once after them."""
    conn.execute(f"DELETE FROM {schema}.{TABLE}")
    drop_primary_key(conn, schema)
    rows = conn.execute(_postings_of(schema, f"{schema}.memories")).rowcount
    restore_primary_key(conn, schema)
    conn.execute(f"ANALYZE {schema}.{TABLE}")
    if rows > 0:
        log.info("wrote %d keyword postings in %s", rows, target.describe())


def drop_primary_key(db: psycopg.Connection[Any] | psycopg.Cursor[Any], schema: str) -> None:
    """Before writing many postings at once: the key is built once, sorted, by
    restore_primary_key, instead of row by row."""
    db.execute(f"ALTER TABLE {schema}.{TABLE} DROP CONSTRAINT {TABLE}_pkey")


def restore_primary_key(db: psycopg.Connection[Any] | psycopg.Cursor[Any], schema: str
                        ) -> None:
    db.execute(f"ALTER TABLE {schema}.{TABLE} ADD {PRIMARY_KEY}")
