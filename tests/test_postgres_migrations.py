"""Versioned migrations on PostgreSQL: create once, refuse newer or foreign schemas, coexist."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from memvault.errors import SchemaError
from memvault.store import SCHEMA_VERSION
from memvault.store.postgres import SCHEMA, PostgresStore


def _sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def test_new_database_gets_pgvector_and_the_current_schema(pg_url: str) -> None:
    assert _sql(pg_url, "SELECT 1 FROM pg_extension WHERE extname = 'vector'") == []
    store = PostgresStore(pg_url)
    assert store.meta().schema_version == SCHEMA_VERSION
    store.close()
    assert _sql(pg_url, "SELECT 1 FROM pg_extension WHERE extname = 'vector'") == [(1,)]
    tables = {r[0] for r in _sql(pg_url,
                                 f"SELECT tablename FROM pg_tables WHERE schemaname = '{SCHEMA}'")}
    assert {"meta", "memories", "embedders", "vectors", "journal", "journal_counter"} <= tables


def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({s.meta().store_id for s in opened}) == 1
    for s in opened:
        s.close()


def test_newer_schema_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    _sql(pg_url, f"UPDATE {SCHEMA}.meta SET value = '{SCHEMA_VERSION + 1}' "
                 "WHERE key = 'schema_version'")
    with pytest.raises(SchemaError) as failure:
        PostgresStore(pg_url)
    assert "newer" in str(failure.value) and "upgrade memvault" in (failure.value.hint or "")


def test_foreign_schema_of_the_same_name_is_refused_untouched(pg_url: str) -> None:
    _sql(pg_url, f"CREATE SCHEMA {SCHEMA}; CREATE TABLE {SCHEMA}.memories (x int);"
                 f"INSERT INTO {SCHEMA}.memories VALUES (42);")
    with pytest.raises(SchemaError) as failure:
        PostgresStore(pg_url)
    assert "not a memvault store" in str(failure.value)
    assert _sql(pg_url, f"SELECT x FROM {SCHEMA}.memories") == [(42,)]


def test_mem0_tables_may_share_the_database(pg_url: str) -> None:
    # mem0's pgvector collection and a stray `memories` table in the public schema.
    _sql(pg_url, "CREATE EXTENSION IF NOT EXISTS vector;"
                 "CREATE TABLE public.mem0 (id uuid PRIMARY KEY, vector vector(8), payload jsonb);"
                 "CREATE TABLE public.memories (id text, memory text);"
                 "INSERT INTO public.memories VALUES ('m1', 'mem0 row');")
    store = PostgresStore(pg_url)
    assert store.total() == 0
    store.close()
    assert _sql(pg_url, "SELECT id, memory FROM public.memories") == [("m1", "mem0 row")]


def test_replicas_opening_a_version_1_store_together_rekey_it_once(pg_url: str) -> None:
    from memvault.store.records import legacy_namespace_key, namespace_key
    from tests.helpers import prepared, record, vectors

    store = PostgresStore(pg_url)
    ident = prepared(store)
    recs = [record("same text", user_id="x", agent_id="y/run:z"),
            record("other text", user_id="100%", agent_id="a/b")]
    store.add(recs, vectors(len(recs)), ident.key, None)
    store.close()
    for r in recs:  # as schema version 1 wrote them
        _sql(pg_url, f"UPDATE {SCHEMA}.memories SET namespace = "
                     f"'{legacy_namespace_key(r.user_id, r.agent_id, r.run_id)}' "
                     f"WHERE id = '{r.id}'")
    _sql(pg_url, f"UPDATE {SCHEMA}.meta SET value = '1' WHERE key = 'schema_version'")

    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {s.meta().schema_version for s in opened} == {SCHEMA_VERSION}
    assert opened[0].counts() == {r.namespace: 1 for r in recs}
    assert {r.namespace for r in recs} == {namespace_key("x", "y/run:z", None),
                                           namespace_key("100%", "a/b", None)}
    for s in opened:
        s.close()
