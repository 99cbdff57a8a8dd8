"""The store contract, proved on every backend in conftest.BACKENDS."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from memvault.errors import InvalidInput, StoreError
from memvault.store import Store, parse_filters
from tests.helpers import DIMS, identity, prepared, record, vectors


def test_new_store_has_identity_and_schema(store: Store) -> None:
    meta = store.meta()
    assert len(meta.store_id) == 36 and len(meta.lineage_id) == 36
    assert meta.schema_version >= 1
    assert meta.active_embedder is None
    assert store.total() == 0 and store.last_seq() == 0


def test_add_get_and_journal_in_one_step(store: Store) -> None:
    ident = prepared(store)
    recs = [record("alpha", metadata={"k": 1}), record("beta", agent_id="bot")]
    outcomes = store.add(recs, vectors(2), ident.key, actor="tester")
    assert [o.created for o in outcomes] == [True, True]
    assert store.get(recs[0].id) == recs[0]
    assert store.get(recs[1].id).agent_id == "bot"
    entries = store.journal()
    assert [(e.seq, e.op, e.memory_id, e.actor) for e in entries] == [
        (1, "ADD", recs[0].id, "tester"), (2, "ADD", recs[1].id, "tester")]
    assert entries[0].after["memory"] == "alpha"
    assert store.counts() == {"user:alice": 1, "user:alice/agent:bot": 1}
    assert store.vector_counts() == {ident.key: 2}


def test_same_text_in_same_namespace_is_stored_once(store: Store) -> None:
    ident = prepared(store)
    first = store.add([record("same")], vectors(1), ident.key, None)[0]
    again = store.add([record("same"), record("same")], vectors(2, seed=1), ident.key, None)
    assert [o.created for o in again] == [False, False]
    assert {o.id for o in again} == {first.id}
    other = store.add([record("same", user_id="bob")], vectors(1), ident.key, None)[0]
    assert other.created
    assert store.total() == 2
    assert store.last_seq() == 2


def test_update_replaces_record_and_vector(store: Store) -> None:
    ident = prepared(store)
    rec = record("old text")
    store.add([rec], vectors(1), ident.key, None)
    new_vec = vectors(1, seed=9)[0]
    changed = rec.evolve(memory="new text", hash="h2", updated_at="2099-01-01T00:00:00+00:00")
    entry = store.update(changed, new_vec, ident.key, actor="u")
    assert entry.op == "UPDATE" and entry.before["memory"] == "old text"
    assert entry.after["memory"] == "new text"
    assert store.get(rec.id).memory == "new text"
    hits = store.search(new_vec, ident.key, parse_filters({"user_id": "alice"}), 1)
    assert hits[0][0].id == rec.id and hits[0][1] == pytest.approx(1.0, abs=1e-5)


def test_field_updates_apply_to_the_current_row_not_a_stale_copy(store: Store) -> None:
    ident = prepared(store)
    rec = record("old text")
    store.add([rec], vectors(1), ident.key, None)
    stale = store.get(rec.id)  # two writers read the same version...
    store.update(stale.evolve(metadata={"tag": "a"}, updated_at="2099-01-01T00:00:00+00:00"),
                 None, "", actor="one", fields=["metadata", "updated_at"])
    new_vec = vectors(1, seed=9)[0]
    entry = store.update(
        stale.evolve(memory="new text", hash="h2", updated_at="2099-01-02T00:00:00+00:00"),
        new_vec, ident.key, actor="two", fields=["memory", "hash", "updated_at"])
    final = store.get(rec.id)  # ...and neither change is lost
    assert (final.memory, final.metadata) == ("new text", {"tag": "a"})
    assert entry.before["metadata"] == {"tag": "a"} and entry.after["metadata"] == {"tag": "a"}
    with pytest.raises(StoreError, match="without a new vector"):
        store.update(stale.evolve(memory="text with no vector"), None, "", actor="three",
                     fields=["memory"])
    assert store.get(rec.id).memory == "new text"


def test_delete_is_journaled_and_exact(store: Store) -> None:
    ident = prepared(store)
    recs = [record(f"m{i}") for i in range(5)]
    store.add(recs, vectors(5), ident.key, None)
    entries = store.delete([recs[1].id, recs[3].id, "00000000-0000-4000-8000-000000000000"], "x")
    assert sorted(e.memory_id for e in entries) == sorted([recs[1].id, recs[3].id])
    assert all(e.op == "DELETE" and e.before is not None for e in entries)
    assert store.get(recs[1].id) is None and store.get(recs[0].id) is not None
    assert store.total() == 3
    assert store.vector_counts() == {ident.key: 3}
    history = store.history(recs[1].id)
    assert [e.op for e in history] == ["ADD", "DELETE"]


def test_seq_is_monotonic_and_never_reused(store: Store) -> None:
    ident = prepared(store)
    store.add([record("a"), record("b")], vectors(2), ident.key, None)
    store.delete([r.id for r in store.list(None)], None)
    store.add([record("c")], vectors(1), ident.key, None)
    seqs = [e.seq for e in store.journal()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 5
    store.advance_seq(100)
    store.add([record("d")], vectors(1), ident.key, None)
    assert store.last_seq() == 101
    store.advance_seq(50)  # never goes back
    store.add([record("e")], vectors(1), ident.key, None)
    assert store.last_seq() == 102


def test_search_is_exact_cosine(store: Store) -> None:
    ident = prepared(store)
    n = 300
    matrix = vectors(n, seed=3)
    recs = [record(f"text {i}", user_id="alice" if i % 3 else "bob") for i in range(n)]
    store.add(recs, matrix, ident.key, None)
    query = vectors(1, seed=4)[0]
    hits = store.search(query, ident.key, parse_filters({"user_id": "alice"}), 10)
    alice = [i for i in range(n) if i % 3]
    expected = sorted(alice, key=lambda i: -float(matrix[i] @ query))[:10]
    assert [h[0].id for h in hits] == [recs[i].id for i in expected]
    for (rec, score), i in zip(hits, expected, strict=True):
        assert score == pytest.approx(float(matrix[i] @ query), abs=1e-5)
        assert rec.user_id == "alice"
    thresholded = store.search(query, ident.key, parse_filters({"user_id": "alice"}), 50, 0.5)
    assert all(score >= 0.5 for _, score in thresholded)


def test_search_applies_metadata_filters_and_expiry(store: Store) -> None:
    ident = prepared(store)
    recs = [
        record("a", metadata={"topic": "food"}),
        record("b", metadata={"topic": "work"}),
        record("c", metadata={"topic": "food"}, expiration_date="2000-01-01"),
    ]
    store.add(recs, vectors(3), ident.key, None)
    query = vectors(1, seed=7)[0]
    node = parse_filters({"user_id": "alice", "topic": "food"})
    assert {r.memory for r, _ in store.search(query, ident.key, node, 10)} == {"a", "c"}
    live = store.search(query, ident.key, node, 10, include_expired=False)
    assert {r.memory for r, _ in live} == {"a"}
    assert [r.memory for r in store.list(node, include_expired=False)] == ["a"]


def test_search_sees_writes_from_another_connection(settings, store: Store) -> None:  # type: ignore[no-untyped-def]
    from memvault.store import open_store

    ident = prepared(store)
    first = store.add([record("first")], vectors(1), ident.key, None)[0]
    query = vectors(1, seed=1)[0]
    alice = parse_filters({"user_id": "alice"})
    assert len(store.search(query, ident.key, alice, 5)) == 1
    other = open_store(settings)  # e.g. the CLI writing while the server runs
    try:
        added = other.add([record("second")], vectors(1, seed=1), ident.key, None)[0]
        hits = store.search(query, ident.key, alice, 5)
        assert [h[0].id for h in hits] == [added.id, first.id]
        other.delete([first.id], None)
    finally:
        other.close()
    assert [h[0].id for h in store.search(query, ident.key, alice, 5)] == [added.id]


def test_list_is_newest_first_and_limited(store: Store) -> None:
    ident = prepared(store)
    recs = [record(f"r{i}", created_at=f"2026-01-0{i + 1}T00:00:00+00:00") for i in range(5)]
    store.add(recs, vectors(5), ident.key, None)
    assert [r.memory for r in store.list(None, limit=3)] == ["r4", "r3", "r2"]


def test_entities_listing(store: Store) -> None:
    ident = prepared(store)
    store.add([record("a"), record("b"), record("c", user_id="bob", agent_id="bot")],
              vectors(3), ident.key, None)
    entities = {(e["type"], e["id"]): e["total_memories"] for e in store.entities()}
    assert entities == {("user", "alice"): 2, ("user", "bob"): 1, ("agent", "bot"): 1}


def test_embedders_coexist(store: Store) -> None:
    first, second = prepared(store), identity("other", dims=DIMS * 2)
    store.register_embedder(second)
    recs = [record("x"), record("y")]
    store.add(recs, vectors(2), first.key, None)
    store.put_vectors([r.id for r in recs], vectors(2, dims=DIMS * 2), second.key)
    assert store.vector_counts() == {first.key: 2, second.key: 2}
    assert set(store.embedders()) == {first.key, second.key}
    assert store.embedders()[second.key].same_model(second)
    node = parse_filters({"user_id": "alice"})
    assert len(store.search(vectors(1, dims=DIMS * 2)[0], second.key, node, 5)) == 2
    assert len(store.search(vectors(1)[0], first.key, node, 5)) == 2


def test_snapshot_is_consistent_while_writes_continue(store: Store) -> None:
    ident = prepared(store)
    store.add([record(f"s{i}") for i in range(10)], vectors(10), ident.key, None)
    with store.snapshot() as snap:
        store.add([record(f"t{i}") for i in range(5)], vectors(5, seed=2), ident.key, None)
        store.delete([store.list(None, limit=1)[0].id], None)
        assert snap.seq == 10
        assert snap.counts() == {"user:alice": 10}
        assert sum(len(b) for b in snap.iter_records(batch_size=3)) == 10
        _ids, matrix = zip(*snap.iter_vectors(ident.key, batch_size=4), strict=True)
        assert sum(m.shape[0] for m in matrix) == 10 and matrix[0].shape[1] == DIMS
        assert [e.seq for e in snap.journal()] == list(range(1, 11))
    assert store.total() == 14


def test_bulk_load_keeps_ids_and_is_all_or_nothing(store: Store) -> None:
    ident = prepared(store)
    recs = [record(f"b{i}") for i in range(20)]
    assert store.bulk_load(recs, {ident.key: vectors(20)}) == 20
    assert store.get(recs[7].id) == recs[7]
    assert store.last_seq() == 0  # no journal: the backup is their history
    clash = [record("new one"), recs[0]]
    with pytest.raises(InvalidInput):
        store.bulk_load(clash, {ident.key: vectors(2)})
    assert store.total() == 20
    assert store.get(clash[0].id) is None
    hits = store.search(vectors(20)[3], ident.key, parse_filters({"user_id": "alice"}), 1)
    assert hits[0][0].id == recs[3].id


def test_meta_roundtrip(store: Store) -> None:
    store.set_meta("marker", {"a": [1, 2]})
    assert store.get_meta("marker") == {"a": [1, 2]}
    assert store.get_meta("missing") is None
    assert store.meta().extra["marker"] == {"a": [1, 2]}


def test_vectors_are_float32_roundtrip(store: Store) -> None:
    ident = prepared(store)
    matrix = vectors(3, seed=11)
    recs = [record(f"v{i}") for i in range(3)]
    store.add(recs, matrix, ident.key, None)
    with store.snapshot() as snap:
        got = {i: v for ids, m in snap.iter_vectors(ident.key) for i, v in zip(ids, m,
                                                                              strict=True)}
    for rec, row in zip(recs, matrix, strict=True):
        np.testing.assert_array_equal(got[rec.id], row)


def test_bulk_load_refuses_an_unregistered_embedder_clearly(store: Store) -> None:
    from memvault.errors import StoreError

    prepared(store)
    with pytest.raises(StoreError, match="not registered"):
        store.bulk_load([record("orphan")], {"test:nobody:8": vectors(1)})
    with pytest.raises(StoreError, match="1 records but 2 vectors"):
        store.bulk_load([record("short")], {store.meta().active_embedder: vectors(2)})
    assert store.total() == 0


def test_sqlite_other_process_reloads_only_the_reembedded_models_index(tmp_path: Any) -> None:
    """Re-embedding for a new model (put_vectors) must not make every search of the live
    model in other processes reload its whole index; re-embedding the live model must."""
    from memvault.store.sqlite import SQLiteStore

    writer, reader = SQLiteStore(tmp_path / "m.db"), SQLiteStore(tmp_path / "m.db")
    try:
        live = prepared(writer)
        recs = [record(f"m{i}") for i in range(20)]
        writer.add(recs, vectors(20), live.key, None)
        reader.search(vectors(1)[0], live.key, None, 3)
        loaded = reader._searchers.exact[live.key]
        other = identity("other", DIMS)
        writer.register_embedder(other)
        writer.put_vectors([r.id for r in recs], vectors(20, seed=5), other.key)
        reader.search(vectors(1)[0], live.key, None, 3)
        assert reader._searchers.exact[live.key] is loaded  # kept
        fresh = vectors(20, seed=7)
        writer.put_vectors([r.id for r in recs], fresh, live.key)
        hits = reader.search(fresh[4], live.key, None, 1)
        assert reader._searchers.exact[live.key] is not loaded  # reloaded, and sees the new vectors
        assert hits[0][0].id == recs[4].id and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    finally:
        writer.close()
        reader.close()
