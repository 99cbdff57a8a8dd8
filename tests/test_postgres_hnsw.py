"""The HNSW index per embedder: built, used by searches, and close to exact search."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from memvault.embed.base import normalize_rows
from memvault.store import parse_filters
from memvault.store import postgres as pg
from memvault.store.postgres import PostgresStore
from tests.helpers import identity, prepared, record

DIMS = 32
N = 4000


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 40 topic centres, like embeddings of text on a few subjects."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIMS))
    return normalize_rows(centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, DIMS)))


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:
    # ef_search=100: with the default 200, pgvector's cost model rightly prefers an exact scan
    # of these small test tables, and the plan assertions below would test the planner instead.
    opened = PostgresStore(pg_url, ef_search=100)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def filled(pg_server: Any) -> Iterator[tuple[PostgresStore, str, np.ndarray, list[str]]]:
    """One store of N clustered vectors shared by the read-only tests of this module."""
    name = "t_hnsw_" + uuid.uuid4().hex[:8]
    pg_server.psql(f"CREATE DATABASE {name};")
    store = PostgresStore(pg_server.get_uri(name), ef_search=100)
    ident = prepared(store, identity("hnsw", DIMS))
    vecs = clustered(N, seed=1)
    recs = [record(f"memory {i}", user_id=f"u{i % 10}", metadata={"n": i}) for i in range(N)]
    store.add(recs, vecs, ident.key, None)
    with store._connection() as conn:
        conn.execute("ANALYZE memvault.vectors; ANALYZE memvault.memories")
    yield store, ident.key, vecs, [r.id for r in recs]
    store.close()
    pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


def _exact(vecs: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray | None = None
           ) -> list[int]:
    scores = vecs @ query
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return [int(i) for i in np.argsort(-scores)[:k]]


def test_each_embedder_has_its_own_index(pg_store: PostgresStore) -> None:
    small, big = identity("small", 8), identity("big", 16)
    prepared(pg_store, small)
    pg_store.register_embedder(big)
    with pg_store._connection() as conn:
        defs = {name: definition for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'memvault' "
            "AND indexdef LIKE '%hnsw%'")}
    assert set(defs) == {pg_store.hnsw_index_name(small.key), pg_store.hnsw_index_name(big.key)}
    for ident in (small, big):
        definition = defs[pg_store.hnsw_index_name(ident.key)]
        assert f"vector({ident.dims})" in definition and ident.key in definition
        assert "vector_cosine_ops" in definition and "m='16'" in definition
    # Vectors of both sizes live side by side and each search finds its own.
    rec = record("two embedders")
    pg_store.add([rec], normalize_rows(np.ones((1, 8))), small.key, None)
    pg_store.put_vectors([rec.id], normalize_rows(np.ones((1, 16))), big.key)
    assert pg_store.vector_counts() == {small.key: 1, big.key: 1}
    assert pg_store.search(normalize_rows(np.ones((1, 16)))[0], big.key, None, 5)[0][0].id \
        == rec.id


def test_search_plan_uses_the_hnsw_index(
    filled: tuple[PostgresStore, str, np.ndarray, list[str]],
) -> None:
    store, key, vecs, _ = filled
    statement, params = store.vector_search.statement(vecs[0], key, None, 10)
    with store._connection() as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement, params))
    assert store.hnsw_index_name(key) in plan, plan


def test_recall_against_exact_search(
    filled: tuple[PostgresStore, str, np.ndarray, list[str]],
) -> None:
    store, key, vecs, ids = filled
    queries = clustered(40, seed=2)
    found = total = 0
    for query in queries:
        hits = store.search(query, key, None, 10)
        exact = {ids[i] for i in _exact(vecs, query, 10)}
        assert len(hits) == 10
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True)
        found += len(exact & {h.id for h, _ in hits})
        total += 10
    # These synthetic vectors are harder than text embeddings (bench: real text, >= 0.95).
    assert found / total >= 0.9


def test_filtered_search_still_returns_top_k(
    filled: tuple[PostgresStore, str, np.ndarray, list[str]],
) -> None:
    store, key, vecs, ids = filled
    numbers = np.arange(N)
    cases = [
        ({"user_id": "u3"}, numbers % 10 == 3),            # 10% of the rows
        ({"n": {"lt": 80}}, numbers < 80),                 # 2%: the graph walk must go on
        ({"AND": [{"user_id": "u7"}, {"n": {"gte": 3000}}]},
         (numbers % 10 == 7) & (numbers >= 3000)),
    ]
    for filters, allowed in cases:
        found = total = 0
        for query in clustered(10, seed=3):
            hits = store.search(query, key, parse_filters(filters), 10)
            assert len(hits) == 10, filters
            assert all(allowed[ids.index(h.id)] for h, _ in hits), filters
            exact = {ids[i] for i in _exact(vecs, query, 10, allowed)}
            found += len(exact & {h.id for h, _ in hits})
            total += 10
        assert found / total >= 0.9, filters


def test_top_k_beyond_ef_search_and_threshold(
    filled: tuple[PostgresStore, str, np.ndarray, list[str]],
) -> None:
    store, key, vecs, _ = filled
    with store._connection() as conn:
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("100",)
    assert len(store.search(vecs[5], key, None, 150)) == 150  # > ef_search
    scores = vecs @ vecs[5]
    hits = store.search(vecs[5], key, None, 150, threshold=0.8)
    assert hits and all(score >= 0.8 for _, score in hits)
    assert len(hits) == min(150, int((scores >= 0.8).sum()))


def test_a_hybrid_searchs_candidates_walk_half_as_deep_never_short_of_top_k(
    filled: tuple[PostgresStore, str, np.ndarray, list[str]],
) -> None:
    """The rule: half the configured ef_search for candidates, at least top_k, at most
    pgvector's 1,000; and the walk still finds what the full one finds on this store."""
    from memvault.store.postgres.hnsw import walk_depth

    assert walk_depth(200, 50, candidates=True) == 100
    assert walk_depth(200, 50, candidates=False) == 200
    assert walk_depth(200, 150, candidates=True) == 150
    assert walk_depth(1000, 5000, candidates=False) == 1000
    assert walk_depth(1, 1, candidates=True) == 1
    store, key, vecs, ids = filled  # ef_search 100: candidates walk at 50
    found = total = 0
    for query in clustered(20, seed=5):
        hits = store.search_ids(query, key, None, 10, candidates=True)
        assert len(hits) == 10 and [s for _, s in hits] == sorted((s for _, s in hits),
                                                                   reverse=True)
        found += len({ids[i] for i in _exact(vecs, query, 10)} & {i for i, _ in hits})
        total += 10
    assert found / total >= 0.85
    assert len(store.search_ids(vecs[5], key, None, 80, candidates=True)) == 80  # > 50


def test_large_bulk_load_rebuilds_the_index(
    pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg.hnsw, "BULK_REINDEX_MIN_ROWS", 500)  # the real threshold, made small
    ident = prepared(pg_store, identity("bulk", DIMS))
    vecs = clustered(5000, seed=4)
    recs = [record(f"bulk {i}") for i in range(5000)]
    assert pg_store.bulk_load(recs, {ident.key: vecs}) == 5000
    statement, params = pg_store.vector_search.statement(vecs[0], ident.key, None, 10)
    with pg_store._connection() as conn:  # no ANALYZE here: bulk_load must leave fresh stats
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement, params))
    assert pg_store.hnsw_index_name(ident.key) in plan
    hits = pg_store.search(vecs[0], ident.key, None, 10)
    assert hits[0][0].id == recs[0].id and len(hits) == 10


def test_selective_filter_beyond_the_index_walk_falls_back_to_exact(pg_url: str) -> None:
    # Scaled down: a walk of at most 60 tuples over 2000 rows, as 20,000 over millions.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f"ALTER DATABASE {name} SET hnsw.max_scan_tuples = 60")
    store = PostgresStore(pg_url)
    ident = prepared(store, identity("walk", DIMS))
    vecs = clustered(2000, seed=5)
    rare = set(range(0, 2000, 160))  # 13 memories of one user, spread over every cluster
    recs = [record(f"walk {i}", user_id="one", metadata={"rare": i in rare})
            for i in range(2000)]
    store.add(recs, vecs, ident.key, None)
    with store._connection() as conn:
        conn.execute("ANALYZE memvault.vectors; ANALYZE memvault.memories")
    # A metadata filter: the planner cannot tell how few rows pass it, so it walks the graph
    # (a user this small is ranked exactly from the user index: the test below).
    node = parse_filters({"rare": True})
    query = clustered(1, seed=6)[0]
    statement, params = store.vector_search.statement(query, ident.key, node, 10)
    with store._connection() as conn, conn.transaction():
        conn.execute("SET LOCAL enable_bitmapscan = off")  # make the planner walk the graph
        conn.execute("SET LOCAL enable_indexscan = on")
        conn.execute("SET LOCAL enable_seqscan = off")
        walked = conn.execute(statement, params).fetchall()
    hits = store.search(query, ident.key, node, 10)
    allowed = np.array([i in rare for i in range(2000)])
    assert len(hits) == 10
    assert [h.id for h, _ in hits] == [recs[i].id for i in _exact(vecs, query, 10, allowed)]
    assert len(walked) < 10  # the graph walk alone falls short: the fallback is needed
    exact_sql, exact_params = store.vector_search.statement(query, ident.key, node, 10, exact=True)
    with store._connection() as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + exact_sql, exact_params))
    assert store.hnsw_index_name(ident.key) not in plan
    store.close()


def test_deferred_index_restore_is_exact_first_then_indexed(pg_store: PostgresStore) -> None:
    ident = prepared(pg_store, identity("deferred", DIMS))
    name = pg_store.hnsw_index_name(ident.key)

    def index_state() -> tuple[bool, ...] | None:
        with pg_store._connection() as conn:
            return conn.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %s", (name,)).fetchone()

    assert index_state() == (True,)
    vecs = clustered(5000, seed=8)
    recs = [record(f"restored {i}", user_id=f"u{i % 3}") for i in range(5000)]
    with pg_store.deferring_search_index():
        pg_store.bulk_load(recs[:2500], {ident.key: vecs[:2500]})
        pg_store.bulk_load(recs[2500:], {ident.key: vecs[2500:]})
        assert index_state() is None
    # Served before the index exists: the ranking is exact.
    query = clustered(1, seed=9)[0]
    hits = pg_store.search(query, ident.key, None, 10)
    assert [h.id for h, _ in hits] == [recs[i].id for i in _exact(vecs, query, 10)]
    pg_store.add([record("written meanwhile")], clustered(1, seed=10), ident.key, None)
    pg_store.build_search_indexes()
    assert index_state() == (True,)
    statement, params = pg_store.vector_search.statement(query, ident.key, None, 10)
    with pg_store._connection() as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement, params))
    assert name in plan
    pg_store.build_search_indexes()  # idempotent: a valid index is left alone
    assert pg_store.total() == 5001


def test_a_user_with_few_memories_is_ranked_exactly_from_the_user_index(pg_url: str) -> None:
    """The filter on a user is plain SQL the planner can estimate: few rows are read from the
    user index and ranked exactly (a graph walk past thousands of other users' vectors was 20x
    slower at 1%), while the user holding most memories is still served by the graph."""
    store = PostgresStore(pg_url, ef_search=100)
    ident = prepared(store, identity("few", DIMS))
    vecs = clustered(3000, seed=7)
    recs = [record(f"few {i}", user_id="few" if i % 100 == 0 else "many") for i in range(3000)]
    store.add(recs, vecs, ident.key, None)
    with store._connection() as conn:
        conn.execute("ANALYZE memvault.vectors; ANALYZE memvault.memories")
    query = clustered(1, seed=8)[0]
    plans = {}
    for user in ("few", "many"):
        statement, params = store.vector_search.statement(query, ident.key,
                                                   parse_filters({"user_id": user}), 10)
        with store._connection() as conn:
            plans[user] = "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement, params))
    assert store.hnsw_index_name(ident.key) not in plans["few"], plans["few"]
    assert "memories_user" in plans["few"], plans["few"]
    assert store.hnsw_index_name(ident.key) in plans["many"], plans["many"]
    allowed = np.array([i % 100 == 0 for i in range(3000)])
    hits = store.search(query, ident.key, parse_filters({"user_id": "few"}), 10)
    assert [h.id for h, _ in hits] == [recs[i].id for i in _exact(vecs, query, 10, allowed)]
    store.close()
