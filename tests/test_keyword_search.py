"""The keyword index stays in step with the memories on both backends, and search fuses it."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from typing import Any

import numpy as np
import psycopg
import pytest

from memvault.backup import VALID, JournalShipper, create_backup, run_restore
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.errors import InvalidInput
from memvault.memory import Memory, text_hash
from memvault.store import (
    SCHEMA_VERSION,
    MemoryRecord,
    Store,
    open_store,
    parse_filters,
    utc_now,
)
from memvault.store.keywords import CorpusFigures, idf
from tests.helpers import keyword_postings

ALICE = parse_filters({"user_id": "alice"})


def found(store: Store, query: str, node: Any = ALICE) -> list[str]:
    ids = [memory_id for memory_id, _ in store.keyword_ids(query, node, 10)]
    records = store.records(ids)
    return [records[i].memory for i in ids]


def record(text: str, user: str = "alice") -> MemoryRecord:
    now = utc_now()
    return MemoryRecord(id=str(uuid.uuid4()), memory=text, hash=text_hash(text),
                        created_at=now, updated_at=now, user_id=user, role="user")


def test_index_follows_add_update_delete_and_reembed(memory: Memory) -> None:
    store = memory.store
    added = memory.add([{"role": "user", "content": t} for t in [
        "Alice adopted a greyhound named Comet", "Alice runs marathons in Lisbon",
    ]], user_id="alice", infer=False)["results"]
    memory.add("Bob adopted a greyhound too", user_id="bob", infer=False)
    # stems match across forms ("adopting" ~ "adopted"); the scope holds: no Bob
    assert found(store, "adopting greyhounds") == ["Alice adopted a greyhound named Comet"]
    assert found(store, "RUNNING in lisbon")[0] == "Alice runs marathons in Lisbon"
    dog = next(a["id"] for a in added if "Comet" in a["memory"])
    memory.update(dog, "Alice adopted a tabby cat named Comet")
    assert found(store, "greyhound") == []
    assert found(store, "tabby") == ["Alice adopted a tabby cat named Comet"]
    memory.delete(dog)
    assert found(store, "tabby") == []
    # re-embedding replaces vectors only: the text and its index are untouched
    key = memory.embedder_identity().key
    runner = next(a["id"] for a in added if "Lisbon" in a["memory"])
    store.put_vectors([runner], np.ones((1, 384), dtype=np.float32) / np.sqrt(384), key)
    assert found(store, "marathon") == ["Alice runs marathons in Lisbon"]
    assert found(store, "greyhound", parse_filters({"user_id": "bob"})) == [
        "Bob adopted a greyhound too"]


def test_bulk_load_fills_the_index_as_restore_does(memory: Memory, store: Store) -> None:
    memory.add("Alice keeps bees on the roof", user_id="alice", infer=False)
    key = memory.embedder_identity().key
    with memory.store.snapshot() as snap:
        records = [r for batch in snap.iter_records() for r in batch]
        vectors = np.concatenate([m for _, m in snap.iter_vectors(key)])
    memory.reset()
    assert found(store, "bees") == []
    store.bulk_load(records, {key: vectors})
    assert found(store, "beekeeping bees") == ["Alice keeps bees on the roof"]
    assert found(memory.store, "bees") == ["Alice keeps bees on the roof"]


def test_restore_rebuilds_the_index(memory: Memory, settings: Settings, backend: str,
                                    tmp_path: Any, local_embedder: LocalEmbedder,
                                    request: pytest.FixtureRequest) -> None:
    """A backup carries no index: the restored store finds by keyword what the source did,
    including what the shipped journal changed after the snapshot."""
    memory.add("Alice collects vintage typewriters", user_id="alice", infer=False)
    kept = memory.add("Alice learns Portuguese", user_id="alice", infer=False)["results"][0]
    (snapshot,) = create_backup(memory.store, settings)
    assert snapshot.status == VALID, snapshot.reasons
    shipper = JournalShipper(memory.store, settings)
    memory.update(kept["id"], "Alice learns Icelandic")
    memory.add("Alice repairs typewriter ribbons", user_id="alice", infer=False)
    assert shipper.ship() == 1
    server, name = None, "k_" + uuid.uuid4().hex[:12]
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        server.psql(f"CREATE DATABASE {name};")
        url = server.get_uri(name)
    else:
        url = f"sqlite:///{tmp_path / 'restored' / 'memvault.db'}"
    target_settings = settings.model_copy(update={"database_url": url})
    target = open_store(target_settings)
    try:
        run_restore(target, target_settings, local_embedder)
        assert sorted(found(target, "typewriters")) == sorted(found(memory.store, "typewriter"))
        assert len(found(target, "typewriter")) == 2
        assert found(target, "Icelandic") == ["Alice learns Icelandic"]
        assert found(target, "Portuguese") == []
    finally:
        target.close()
        if server is not None:
            server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


def _downgrade_to_schema_2(settings: Settings, backend: str) -> None:
    """Make the store what memvault 2 left: no keyword column, no index, version 2."""
    if backend == "sqlite":
        assert settings.sqlite_path is not None
        conn = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        for name in ("insert", "delete", "update"):
            conn.execute(f"DROP TRIGGER memories_fts_{name}")
        conn.execute("DROP TABLE memories_fts_terms")
        conn.execute("DROP TABLE memories_fts")
        conn.execute("DROP INDEX memories_namespace_created")
        conn.execute("ALTER TABLE memories DROP COLUMN keywords")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        conn.execute("PRAGMA user_version = 2")
        conn.close()
        return
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        _drop_postings(conn)
        conn.execute("DROP INDEX memvault.memories_namespace_created")
        conn.execute("ALTER TABLE memvault.memories DROP COLUMN keywords")
        conn.execute("UPDATE memvault.meta SET value = '2' WHERE key = 'schema_version'")


def _drop_postings(conn: psycopg.Connection[Any]) -> None:
    for name in ("insert", "delete", "update"):
        conn.execute(f"DROP TRIGGER keyword_postings_{name} ON memvault.memories")
        conn.execute(f"DROP FUNCTION memvault.keyword_postings_{name}")
    conn.execute("DROP TABLE memvault.keyword_postings")


def test_postgres_migration_to_postings_keeps_every_memory_findable(
        pg_url: str, tmp_path: Any, local_embedder: LocalEmbedder) -> None:
    """A store of schema 3 (its keyword index a GIN index over each memory's tsvector) gets
    its postings written at open and the GIN index dropped."""
    pg_settings = load_settings({"data_dir": tmp_path, "database_url": pg_url})
    with Memory(pg_settings, embedder=local_embedder) as memory:
        memory.add("Alice plays the cello on Sundays", user_id="alice", infer=False)
        memory.add("Alice tunes her cello", user_id="alice", infer=False)
    assert pg_settings.database_url is not None
    with psycopg.connect(pg_settings.database_url, autocommit=True) as conn:
        _drop_postings(conn)
        conn.execute("CREATE INDEX memories_keywords ON memvault.memories "
                     "USING gin (to_tsvector('simple', keywords))")
        conn.execute("UPDATE memvault.meta SET value = '3' WHERE key = 'schema_version'")
    store = open_store(pg_settings)
    try:
        assert store.meta().schema_version == SCHEMA_VERSION
        assert sorted(found(store, "cello")) == ["Alice plays the cello on Sundays",
                                                 "Alice tunes her cello"]
        table, wanted = keyword_postings(pg_settings.database_url)
        assert table == wanted and len(table) == 7
        with psycopg.connect(pg_settings.database_url) as conn:
            assert conn.execute("SELECT to_regclass('memvault.memories_keywords')").fetchone() \
                == (None,)
    finally:
        store.close()


def test_migration_backfills_the_index(settings: Settings, backend: str,
                                       local_embedder: LocalEmbedder) -> None:
    with Memory(settings, embedder=local_embedder) as memory:
        memory.add("Alice plays the cello on Sundays", user_id="alice", infer=False)
    _downgrade_to_schema_2(settings, backend)
    store = open_store(settings)
    try:
        assert store.meta().schema_version == SCHEMA_VERSION
        assert found(store, "cellist playing cello") == ["Alice plays the cello on Sundays"]
        store.add([record("Alice bought a new cello bow")],
                  np.ones((1, 384), dtype=np.float32), memory.embedder_identity().key, None)
        assert len(found(store, "cello")) == 2
    finally:
        store.close()


def test_search_modes_explain_and_threshold(memory: Memory) -> None:
    memory.add([{"role": "user", "content": t} for t in [
        "Alice's passport number ends in 4471",
        "Alice feels anxious before long flights",
        "Alice prefers aisle seats",
    ]], user_id="alice", infer=False)
    query = "passport 4471"
    for mode in ("hybrid", "vector", "keyword"):
        result = memory.search(query, filters={"user_id": "alice"}, search_mode=mode,
                               explain=True, threshold=None)["results"]
        assert result, mode
        assert all(0 <= r["score"] <= 1 for r in result)
        assert [r["score"] for r in result] == sorted((r["score"] for r in result),
                                                      reverse=True)
        details = result[0]["score_details"]
        assert details["search_mode"] == mode
        assert details["fused_score"] == result[0]["score"]
    keyword = memory.search(query, filters={"user_id": "alice"}, search_mode="keyword",
                            explain=True)["results"]
    assert [r["memory"] for r in keyword] == ["Alice's passport number ends in 4471"]
    assert keyword[0]["score_details"]["keyword_rank"] == 1
    assert keyword[0]["score_details"]["vector_score"] is None
    hybrid = memory.search(query, filters={"user_id": "alice"}, explain=True,
                           threshold=None)["results"]
    top = hybrid[0]["score_details"]
    assert hybrid[0]["memory"] == "Alice's passport number ends in 4471"
    assert top["keyword_rank"] == 1 and top["vector_rank"] is not None
    assert top["keyword_score"] > 0 and top["vector_score"] > 0
    # threshold applies to the final (fused) score
    cut = hybrid[0]["score"] - 1e-9
    kept = memory.search(query, filters={"user_id": "alice"}, threshold=cut)["results"]
    assert [r["id"] for r in kept] == [r["id"] for r in hybrid if r["score"] >= cut]
    with pytest.raises(InvalidInput, match="search_mode"):
        memory.search(query, filters={"user_id": "alice"}, search_mode="bm25")


def test_configured_mode_is_the_default(settings: Settings,
                                        local_embedder: LocalEmbedder) -> None:
    keyword_only = load_settings({**settings.model_dump(), "search": "keyword"})
    with Memory(keyword_only, embedder=local_embedder) as memory:
        memory.add("Alice grows tomatoes", user_id="alice", infer=False)
        # nothing shares a stem with the query: keyword mode finds nothing, vector would
        assert memory.search("vegetable garden", user_id="alice")["results"] == []
        assert memory.search("vegetable garden", user_id="alice", search_mode="vector",
                             threshold=None)["results"]


def test_neighbours_are_the_memories_around_one_in_its_namespace(memory: Memory) -> None:
    ids = [memory.add(t, user_id="alice", infer=False)["results"][0]["id"]
           for t in ("first turn", "second turn", "third turn")]
    other = memory.add("bob's turn", user_id="bob", infer=False)["results"][0]["id"]
    near = memory.store.neighbours([*ids, other])
    assert near[ids[0]] == (None, ids[1])
    assert near[ids[1]] == (ids[0], ids[2])
    assert near[ids[2]] == (ids[1], None)
    assert near[other] == (None, None)
    # two steps: the map around one memory, to the namespace's first turn and no further
    assert memory.store.neighbours([ids[0]], 2) == {ids[0]: (None, ids[1]),
                                                   ids[1]: (ids[0], ids[2])}
    assert memory.store.neighbours([ids[1], other], 2) == {
        ids[0]: (None, ids[1]), ids[1]: (ids[0], ids[2]), ids[2]: (ids[1], None),
        other: (None, None)}
    # hybrid search lifts a turn next to a strong match: details say by how much
    result = memory.search("second", user_id="alice", explain=True, threshold=None)["results"]
    by_id = {r["id"]: r["score_details"] for r in result}
    assert by_id[ids[0]]["neighbour_score"] > 0 and by_id[ids[2]]["neighbour_score"] > 0
    assert by_id[ids[1]]["keyword_rank"] == 1


def test_bounded_terms_drops_the_most_frequent_stems_of_a_large_match() -> None:
    from memvault.store.keywords import bounded_terms

    counts = {"rare": 3, "common": 4000, "everywhere": 90_000}
    assert bounded_terms(["everywhere", "rare", "common", "absent"], counts) == ["rare", "common"]
    assert bounded_terms(["everywhere"], counts) == ["everywhere"]  # the rarest one stays
    assert bounded_terms(["rare", "common"], counts, budget=100) == ["rare"]
    assert bounded_terms(["absent"], counts) == []


def test_bm25_survives_statistics_older_than_the_matches() -> None:
    """Counted before concurrent adds: more memories hold a stem than the store had."""
    from memvault.store.keywords import bm25

    scores = bm25(["note"], ["new note", "old note", "note"], total=1, mean_length=2.0,
                  frequency={"note": 3})
    assert len(scores) == 3 and all(s > 0 for s in scores)


def test_keyword_and_hybrid_honour_filters_and_expiry(memory: Memory) -> None:
    memory.add("Alice's red bicycle has a flat tyre", user_id="alice", infer=False,
               metadata={"topic": "bike"})
    memory.add("Alice's red scarf is wool", user_id="alice", infer=False,
               metadata={"topic": "clothes"})
    memory.add("Alice's red kite tore", user_id="alice", infer=False,
               expiration_date="2000-01-01")
    for mode in ("keyword", "hybrid"):
        scoped = memory.search("red", filters={"user_id": "alice", "topic": "bike"},
                               search_mode=mode, threshold=None)["results"]
        assert [r["memory"] for r in scoped] == ["Alice's red bicycle has a flat tyre"], mode
        live = memory.search("red kite", user_id="alice", search_mode=mode,
                             threshold=None)["results"]
        assert "Alice's red kite tore" not in [r["memory"] for r in live], mode
        every = memory.search("red kite", user_id="alice", search_mode=mode, threshold=None,
                              show_expired=True)["results"]
        assert every[0]["memory"] == "Alice's red kite tore", mode


def test_a_namespace_with_a_small_share_of_the_matches_gets_its_own(memory: Memory,
                                                                     store: Store) -> None:
    """Keyword search ranks the store's matches before checking their scope (fast when the
    namespace holds most of them): when every match ranked first is another namespace's,
    the namespace's own matches must still come back, best first."""
    store.bulk_load([record(f"apple {n}", user="bob") for n in range(120)], {})
    mine = ["Alice bakes an apple pie on Sundays",
            "apple apple crumble is what Alice brings to every picnic in the park",
            "Alice once planted an apple tree behind the old red barn near the river"]
    store.bulk_load([record(text) for text in mine], {})
    got = found(store, "apple")
    assert sorted(got) == sorted(mine)
    assert got[0] == "apple apple crumble is what Alice brings to every picnic in the park"
    # the namespace holding most matches is served from the first ranking, same rules
    bobs = [m for m, _ in store.keyword_ids("apple", parse_filters({"user_id": "bob"}), 5)]
    assert len(bobs) == 5 and all(r.user_id == "bob" for r in store.records(bobs).values())


def test_a_large_store_recounts_its_keyword_figures_beside_the_searches(
        caplog: pytest.LogCaptureFixture) -> None:
    """Counting a million memories takes seconds: a search must not wait for the recount
    that 1% of new writes calls for, nor start a second one while it runs; a failed recount
    is logged and tried again by a later search."""
    gate, calls = threading.Event(), []

    def count() -> tuple[int, float]:
        calls.append(len(calls))
        if len(calls) == 2:
            assert gate.wait(10)
        if len(calls) == 3:
            raise RuntimeError("connection lost")
        return 100_000 + 1_000 * len(calls), 2_000_000.0

    figures = CorpusFigures(count)
    assert figures.get(0) == (101_000, pytest.approx(2_000_000 / 101_000))
    assert figures.get(3_000) == figures.get(3_001) == (101_000, pytest.approx(19.80198))
    assert len(calls) == 2  # one recount, still waiting
    gate.set()
    deadline = time.monotonic() + 10
    while figures.get(3_002)[0] == 101_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert figures.get(3_002)[0] == 102_000
    with caplog.at_level("WARNING", logger="memvault.store"):
        assert figures.get(9_000)[0] == 102_000  # the third count fails in the background
        while len(calls) < 4 and time.monotonic() < deadline:
            figures.get(9_001)
            time.sleep(0.01)
    assert "recounting the keyword statistics failed" in caplog.text
    while figures.get(9_002)[0] != 104_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert figures.get(9_002)[0] == 104_000


def test_primed_figures_are_counted_once_in_the_background() -> None:
    """A server primes the figures as it starts: the count runs beside it, a search that
    arrives meanwhile waits for that count instead of starting its own, and priming again
    once figures exist counts nothing."""
    gate, calls = threading.Event(), []

    def count() -> tuple[int, float]:
        calls.append(threading.current_thread().name)
        assert gate.wait(10)
        return 1_000_000, 30_000_000.0

    figures = CorpusFigures(count)
    figures.prime(7)
    answer: list[tuple[int, float]] = []
    searcher = threading.Thread(target=lambda: answer.append(figures.get(7)))
    searcher.start()
    searcher.join(0.2)
    assert searcher.is_alive() and not answer  # waiting for the primed count
    gate.set()
    searcher.join(10)
    assert answer == [(1_000_000, 30.0)]
    figures.prime(8)
    assert figures.get(8) == (1_000_000, 30.0)
    assert calls == ["memvault-keyword-figures"]


def test_a_small_store_counts_its_keyword_figures_exactly_every_time() -> None:
    calls = []
    figures = CorpusFigures(lambda: (calls.append(1), (len(calls) * 10, 50.0))[1])
    assert figures.get(0) == (10, 5.0)
    assert figures.get(1) == (20, 2.5)  # a small store: no stale figures at all
    assert figures.get(0) == (30, pytest.approx(50 / 30))  # the journal went back: recount


def test_postgres_postings_follow_every_write(pg_url: str) -> None:
    """The postings a keyword search ranks by are written by triggers in the writing
    statement's transaction: store writes, an operator's SQL, and a large bulk load (which
    rebuilds their key) all leave exactly the postings the rows call for."""
    from memvault.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        first, second, third = (record(t) for t in (
            "Alice sails sails and sails", "Bob bakes sourdough bread", "Carol climbs"))
        # into an empty store, large: the postings' key is dropped and built after the COPY
        store.bulk_load([first, second, third,
                         *(record(f"note {n} about kayaks") for n in range(10_000))], {})
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_constraint "
                                "WHERE conname = 'keyword_postings_pkey'").fetchone() == (1,)
        store.update(third.evolve(metadata={"mood": "calm"}), None, "k", None,
                     fields={"metadata"})
        store.delete([first.id], None)
        table, wanted = keyword_postings(pg_url)
        assert table == wanted and ("sourdough", second.id, 1, 4) in table
        assert not any(memory_id == first.id for _, memory_id, _, _ in table)
        with psycopg.connect(pg_url) as conn:
            conn.execute("UPDATE memvault.memories SET keywords = 'zither zither' "
                         "WHERE id = %s", (third.id,))
            conn.execute("DELETE FROM memvault.memories WHERE id = %s", (second.id,))
        table, wanted = keyword_postings(pg_url)
        assert table == wanted and ("zither", third.id, 2, 2) in table
        assert len(table) == 1 + 10_000 * 3
        # into a store holding memories: the key is kept and written row by row
        store.bulk_load([record(f"kayaks and zithers {n}") for n in range(10_000)], {})
        table, wanted = keyword_postings(pg_url)
        assert table == wanted and len(table) == 1 + 10_000 * 3 + 10_000 * 3
        assert len(found(store, "kayaks")) == 10
        assert found(store, "zither")[0] == "Carol climbs"
    finally:
        store.close()


def test_postgres_keyword_ranking_in_scope_equals_the_joined_ranking(pg_url: str) -> None:
    """Whichever way a scope is served (the first few of the store-wide ranking checked,
    all of it checked, or a ranking joined to the rows in scope), the result is the exact
    BM25 ranking of the matches in scope."""
    from memvault.store.postgres import PostgresStore
    from memvault.store.postgres.keyword import ranking_sql

    store = PostgresStore(pg_url)
    try:
        # BM25 of one stem held once ranks shorter memories first: "most" holds the ten best
        # matches, "some" the next ten, "most" again the next fifty, "few" the five last.
        groups = [("most", 10, 2), ("some", 10, 4), ("most", 50, 6), ("few", 5, 8)]
        words = iter(range(10_000))
        store.bulk_load([record(" ".join(["kayak", *(f"w{next(words)}" for _ in range(n - 1))]),
                                user=user) for user, count, n in groups for _ in range(count)],
                        {})
        shares = {"most": 60, "some": 10, "few": 5}
        statements: list[str] = []
        read = store._keyword._read

        def counted(query: str, params: Any) -> list[tuple[Any, ...]]:
            if query.startswith("WITH ranked"):
                statements.append("checked")
            elif "JOIN memories m ON m.id = p.memory_id" in query:
                statements.append("joined")
            return read(query, params)

        store._keyword._read = counted  # type: ignore[method-assign]
        paths = {}
        for user in shares:
            node = parse_filters({"user_id": user})
            statements.clear()
            got = store.keyword_ids("kayaks", node, 10)
            paths[user] = list(statements)
            where, params = store._where(node, True)
            plan = store._keyword._statistics.query("kayaks")
            assert plan is not None
            weights = idf(plan.terms, plan.total, plan.frequency)
            reference = store._read(ranking_sql(where), [
                plan.mean_length, list(weights), list(weights.values()), *params, 10])
            assert [i for i, _ in got] == [row[0] for row in reference], user
            assert len(got) == min(10, shares[user])
        # the three ways: the first few checked; all 40 checked; the joined ranking
        assert [paths[u].count("checked") for u in shares] == [1, 2, 2], paths
        assert [paths[u].count("joined") for u in shares] == [0, 0, 1], paths
    finally:
        store.close()
