"""Attacks on PostgreSQL's keyword postings: a write that fails half way, writers racing
from two processes' worth of stores, another tenant's words. The postings must always be
exactly what the stored rows call for, and a search must never show another scope's memory
(the ranking is store-wide before the scope is checked)."""

from __future__ import annotations

import threading

import pytest

from memvault.errors import InvalidInput
from memvault.memory import text_hash
from memvault.store import parse_filters
from tests.helpers import keyword_postings, prepared, record, vectors


def consistent(url: str) -> int:
    """Assert the postings equal what the memories rows call for; how many there are."""
    table, wanted = keyword_postings(url)
    assert table == wanted
    return len(table)


def test_a_write_that_fails_half_way_leaves_no_postings(pg_url: str) -> None:
    from memvault.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        kept = record("the lighthouse keeper logs the storm")
        store.bulk_load([kept], {})
        before = consistent(pg_url)
        # the second row's id collides with a stored one: the COPY fails after the first row
        # (and its postings) went in, and the whole statement's transaction is rolled back
        with pytest.raises(InvalidInput):
            store.bulk_load([record("a harpoon and a whale"),
                             record("a different text", id=kept.id)], {})
        assert consistent(pg_url) == before
        assert store.keyword_ids("harpoon", parse_filters({"user_id": "alice"}), 10) == []
    finally:
        store.close()


def test_writers_racing_keep_the_postings_exact(pg_url: str) -> None:
    """Two stores (as two server processes would) add, update and delete at once."""
    from memvault.store.postgres import PostgresStore

    stores = [PostgresStore(pg_url), PostgresStore(pg_url)]
    errors: list[BaseException] = []
    try:
        stores[0].bulk_load([record("seed words")], {})
        key = prepared(stores[0]).key

        def writer(n: int) -> None:
            store = stores[n]
            try:
                for i in range(40):
                    text = f"writer{n} note {i} about {['otters', 'kelp', 'tides'][i % 3]}"
                    added = record(text)
                    vector = vectors(1, seed=100 * n + i)
                    store.add([added], vector, key, None)
                    if i % 4 == 1:
                        changed = added.evolve(memory=f"{text} and herons",
                                               hash=text_hash(f"{text} and herons"))
                        store.update(changed, vector[0], key, None)
                    if i % 4 == 2:
                        store.delete([added.id], None)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert consistent(pg_url) > 0
        alice = parse_filters({"user_id": "alice"})
        herons = {i for i, _ in stores[1].keyword_ids("heron", alice, 100)}
        assert len(herons) == 2 * 10  # every updated memory, found by its new word
    finally:
        for store in stores:
            store.close()


def test_another_tenants_words_never_leak_into_a_search(pg_url: str) -> None:
    """Bob's memories hold the word far more often and rank first store-wide; Alice's
    search for it shows only hers, and Carol (none) gets nothing."""
    from memvault.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        store.bulk_load([record(f"password hint {n}", user_id="bob") for n in range(300)]
                        + [record("my password manager", user_id="alice")], {})
        for user, expected in (("alice", ["my password manager"]), ("carol", [])):
            hits = store.keyword_ids("password", parse_filters({"user_id": user}), 10)
            records = store.records([i for i, _ in hits])
            assert [records[i].memory for i, _ in hits] == expected
            assert all(records[i].user_id == user for i, _ in hits)
    finally:
        store.close()

