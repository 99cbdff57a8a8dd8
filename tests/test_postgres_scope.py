"""PostgreSQL: each vector's scope copy and binary code stay those of its memory whatever
writes, and a search in a small scope (ranked by codes) returns what exact ranking does."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest

from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.store import SCHEMA_VERSION, open_store, parse_filters
from memvault.store.postgres import PostgresStore, vector_search
from memvault.store.postgres.codec import register_vector
from tests.helpers import identity, record


def vector_scopes(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(each vector's scope and code as stored, the scope and code its memory calls for)."""
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT memory_id, embedder_key, user_id, agent_id, run_id, code::text "
            "FROM memvault.vectors ORDER BY 1, 2").fetchall()
        rows = conn.execute(
            "SELECT v.memory_id, v.embedder_key, m.user_id, m.agent_id, m.run_id, "
            "v.vector::real[] FROM memvault.vectors v JOIN memvault.memories m "
            "ON m.id = v.memory_id ORDER BY 1, 2").fetchall()
    wanted = [(*row[:5], "".join("1" if x > 0 else "0" for x in row[5])) for row in rows]
    return stored, wanted



def test_scope_and_code_follow_every_write(pg_store: PostgresStore, pg_url: str) -> None:
    ident = identity("scope", 8)
    pg_store.register_embedder(ident)
    rng = np.random.default_rng(3)
    first, second, third = (record(t, user_id=u, agent_id=a) for t, u, a in (
        ("one", "alice", None), ("two", "bob", "helper"), ("three", "carol", None)))
    pg_store.bulk_load([first, second, third], {ident.key: rng.standard_normal((3, 8))})
    pg_store.add([record("four", user_id="dave", run_id="r1")],
                 rng.standard_normal((1, 8)), ident.key, None)
    # a whole-record update may give a memory another scope: its vectors follow
    pg_store.update(first.evolve(user_id="erin", agent_id="bot"), None, ident.key, None)
    # re-embedding writes vectors of another embedder for the same memories
    other = identity("other", 4)
    pg_store.register_embedder(other)
    pg_store.put_vectors([first.id, second.id], rng.standard_normal((2, 4)), other.key)
    stored, wanted = vector_scopes(pg_url)
    assert stored == wanted and len(stored) == 6
    assert {row[2] for row in stored if row[0] == first.id} == {"erin"}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # an operator's SQL: a hand-set scope is put back; a moved memory takes its vectors
        conn.execute("UPDATE memvault.vectors SET user_id = 'mallory'")
        conn.execute("UPDATE memvault.memories SET run_id = 'r9' WHERE id = %s", (third.id,))
        conn.execute("UPDATE memvault.vectors SET vector = '[1,-1,1,-1,1,-1,1,-1]' "
                     "WHERE memory_id = %s AND embedder_key = %s", (second.id, ident.key))
    stored, wanted = vector_scopes(pg_url)
    assert stored == wanted
    assert [row[5] for row in stored if row[0] == second.id and row[1] == ident.key] == [
        "10101010"]
    assert [row[4] for row in stored if row[0] == third.id] == ["r9"]
    assert "mallory" not in {row[2] for row in stored}


def test_a_large_bulk_load_fills_every_scope(pg_store: PostgresStore, pg_url: str) -> None:
    ident = identity("bulk", 8)
    pg_store.register_embedder(ident)
    records = [record(f"note {n}", user_id=f"u{n % 7}", agent_id="a" if n % 2 else None)
               for n in range(10_050)]
    pg_store.bulk_load(records, {ident.key: np.random.default_rng(4).standard_normal(
        (len(records), 8))})
    stored, wanted = vector_scopes(pg_url)
    assert stored == wanted and len(stored) == 10_050


def _exact(store: PostgresStore, query: np.ndarray, key: str, node: Any) -> list[str]:
    statement, params = store.vector_search.statement(query, key, node, 10, exact=True)
    with psycopg.connect(store.url) as conn:
        conn.execute("SET search_path TO memvault, public")
        register_vector(conn)
        return [row[0] for row in conn.execute(statement, params).fetchall()]


def test_small_scopes_rank_as_exact_search_does(pg_store: PostgresStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way a scoped search is served gives the exact top 10: a scope no larger than
    the codes kept (exact by construction), a larger small scope (codes, then vectors), a
    filter that leaves too few of the codes kept (the graph walk instead), and a scope over
    the small-scope limit (the walk)."""
    monkeypatch.setattr(vector_search, "SMALL_SCOPE", 1_000)
    ident = identity("ways", 32)
    pg_store.register_embedder(ident)
    rng = np.random.default_rng(5)
    sizes = {"tiny": 4, "kept": 150, "small": 800, "large": 1_500}
    records = [record(f"{user} note {n}", user_id=user, metadata={"rare": n % 40 == 0})
               for user, size in sizes.items() for n in range(size)]
    matrix = rng.standard_normal((len(records), 32)).astype(np.float32)
    pg_store.bulk_load(records, {ident.key: matrix})
    ways: list[str] = []
    scope_sql = vector_search.scope_sql

    def watched(*args: Any) -> str:
        ways.append("codes")
        return scope_sql(*args)

    monkeypatch.setattr(vector_search, "scope_sql", watched)
    cases = [({"user_id": u}, u) for u in sizes] + [({"user_id": "small", "rare": True},
                                                       "small rare")]
    taken = {}
    for filters, name in cases:
        node = parse_filters(filters)
        ways.clear()
        agree = []
        for query in rng.standard_normal((5, 32)).astype(np.float32):
            got = [i for i, _ in pg_store.search_ids(query, ident.key, node, 10)]
            agree.append(len(set(got) & set(_exact(pg_store, query, ident.key, node))))
            assert len(got) == min(10, sizes.get(name, 20)), name
        taken[name] = len(ways)
        # codes rank a scope larger than those kept approximately (random vectors are the
        # codes' worst case); every other way is exact
        assert (min(agree) >= 8) if name == "small" else agree == [min(10, sizes.get(
            name, 20))] * 5, (name, agree)
    assert taken == {"tiny": 5, "kept": 5, "small": 5, "large": 0, "small rare": 5}


def test_postgres_migration_to_scope_columns(pg_url: str, tmp_path: Any,
                                             local_embedder: LocalEmbedder) -> None:
    """A store of schema 4 gets the scope columns, codes and indexes at open, its HNSW
    index rebuilt, every memory still found."""
    settings = load_settings({"data_dir": tmp_path, "database_url": pg_url})
    with Memory(settings, embedder=local_embedder) as memory:
        memory.add("Alice plays the cello on Sundays", user_id="alice", infer=False)
        memory.add("Bob fixes bicycles", user_id="bob", agent_id="shop", infer=False)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER vectors_scope ON memvault.vectors")
        conn.execute("DROP TRIGGER vectors_follow_scope ON memvault.memories")
        for column in ("code", "user_id", "agent_id", "run_id"):
            conn.execute(f"ALTER TABLE memvault.vectors DROP COLUMN {column}")
        conn.execute("UPDATE memvault.meta SET value = '4' WHERE key = 'schema_version'")
    store = open_store(settings)
    try:
        assert store.meta().schema_version == SCHEMA_VERSION
    finally:
        store.close()
    stored, wanted = vector_scopes(pg_url)
    assert stored == wanted and {row[2] for row in stored} == {"alice", "bob"}
    with psycopg.connect(pg_url) as conn:
        indexes = {row[0] for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'vectors'").fetchall()}
        # the rewritten table was vacuumed: a scope index is read without fetching rows
        key = conn.execute("SELECT key FROM memvault.embedders").fetchone()
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN (ANALYZE) SELECT count(*) FROM memvault.vectors "
            "WHERE embedder_key = %s AND user_id = 'alice'", key).fetchall())
    assert sum("USING hnsw" in d for d in indexes) == 1
    assert sum("vectors_scope_" in d for d in indexes) == 3
    assert "Index Only Scan using vectors_scope_user" in plan and "Heap Fetches: 0" in plan
    with Memory(settings, embedder=local_embedder) as memory:
        hits = memory.search("who plays an instrument", user_id="alice")["results"]
        assert [h["memory"] for h in hits] == ["Alice plays the cello on Sundays"]


def test_scope_sizes_stop_past_the_limit_and_are_kept_a_while(
        pg_store: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_search, "SMALL_SCOPE", 5)
    ident = identity("sizes", 8)
    pg_store.register_embedder(ident)
    rng = np.random.default_rng(6)
    pg_store.bulk_load([record(f"n{i}", user_id="big" if i < 9 else "small") for i in range(12)],
                       {ident.key: rng.standard_normal((12, 8))})
    now = [0.0]
    sizes = vector_search.ScopeSizes(
        lambda: psycopg.connect(pg_url, options="-c search_path=memvault"),
        clock=lambda: now[0])
    assert sizes.size(ident.key, "user_id", "big") == 6  # counting stops past the limit
    assert sizes.size(ident.key, "user_id", "small") == 3
    pg_store.add([record("n12", user_id="small")], rng.standard_normal((1, 8)), ident.key, None)
    assert sizes.size(ident.key, "user_id", "small") == 3  # remembered...
    now[0] = vector_search.SIZE_TTL_S + 1
    assert sizes.size(ident.key, "user_id", "small") == 4  # ...for SIZE_TTL_S
    assert sizes.size(ident.key, "agent_id", "none") == 0
