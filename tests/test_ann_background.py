"""Index builds of a SQLite store run in the background: writes never wait for them, searches
are served meanwhile (old index and its overlay, or exact reads, or a clear 503), and what was
written during a rebuild is right once the new index is swapped in."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from memvault.errors import IndexBuilding, StoreError
from memvault.server.errors import error_body
from memvault.server.metrics import index_build_metrics
from memvault.store.sqlite import SQLiteStore, ann, ann_build, ann_builder
from memvault.store.sqlite.ann import AnnIndex
from memvault.store.sqlite.ann_builder import BuildState
from memvault.store.sqlite.ann_file import DATA_PARTS, part_path
from tests.ann_world import (
    DIMS,
    THRESHOLD,
    HeldBuild,
    World,
    finish_builds,
    in_thread,
    make_world,
    search_ids,
)
from tests.helpers import record, vectors

QUERIES = vectors(10, DIMS, seed=7)


@pytest.fixture
def small_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild after 10 changes; the overlay follows 20 while it runs."""
    monkeypatch.setattr(ann, "REBUILD_MIN_CHANGES", 10)
    monkeypatch.setattr(ann, "REBUILD_FRACTION", 0.0)


def serving(world: World, held: HeldBuild) -> SQLiteStore:
    """The store as a server opens it, its builds held by `held`."""
    return SQLiteStore(world.path, ann_threshold=THRESHOLD, progress=held)


def drop_index(world: World) -> None:
    for part in (*DATA_PARTS, "json"):
        world.part(part).unlink()


def same_as_exact(store: SQLiteStore, exact: SQLiteStore, world: World,
                  user: str | None = None) -> None:
    for query in QUERIES[:5]:
        assert search_ids(store, world, query, user) == search_ids(exact, world, query, user)


@pytest.mark.usefixtures("small_rebuilds")
def test_writes_and_searches_go_on_while_the_index_is_rebuilt(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    before = world.header()
    assert before is not None
    held = HeldBuild()
    store = serving(world, held)
    exact = SQLiteStore(world.path)  # no threshold: exact search in memory, the reference
    key = world.ident.key
    early = [record(f"before the rebuild {i}") for i in range(12)]
    early_vectors = vectors(12, DIMS, seed=50)
    store.add(early, early_vectors, key, None)  # 12 changes > 10: the next search rebuilds
    assert in_thread(lambda: search_ids(store, world, early_vectors[0], k=1)) == [early[0].id]
    assert held.started.wait(30)  # the rebuild runs, held inside its first batch
    late = [record(f"during the rebuild {i}") for i in range(3)]
    late_vectors = vectors(3, DIMS, seed=51)
    gone, moved_id = world.ids[10], world.ids[20]
    moved = vectors(1, DIMS, seed=52)[0]
    old = store.get(moved_id)
    assert old is not None
    in_thread(lambda: store.add(late, late_vectors, key, None))
    in_thread(lambda: store.delete([gone], None))
    in_thread(lambda: store.update(old.evolve(memory="moved", hash="moved"), moved, key, None))
    # served meanwhile from the old index and its overlay, exactly as exact search answers
    assert in_thread(lambda: search_ids(store, world, late_vectors[1], k=1)) == [late[1].id]
    same_as_exact(store, exact, world)
    same_as_exact(store, exact, world, "u1")
    assert world.header() == before and held.tasks == 1  # nothing committed yet, one build
    held.release.set()
    finish_builds(store, world)
    after = world.header()
    assert after is not None and after.seq == before.seq + 12 and after.count == 1512
    served = store._searchers.searcher(key)
    assert isinstance(served, AnnIndex) and served.header == after
    # the writes made during the build, caught up from its seq through the journal
    assert search_ids(store, world, late_vectors[2], k=1) == [late[2].id]
    assert search_ids(store, world, moved, k=1) == [moved_id]
    assert gone not in search_ids(store, world, world.matrix[10], k=20)
    same_as_exact(store, exact, world)
    assert store._searchers.builds()[0].builds == 1
    store.close()


@pytest.mark.usefixtures("small_rebuilds")
def test_a_rebuild_through_the_graph_keeps_recall(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "EXACT_ROWS", 50)  # every search goes through the graph
    world = make_world(tmp_path)
    held = HeldBuild()
    store = serving(world, held)
    fresh = vectors(15, DIMS, seed=60)
    recs = [record(f"new {i}") for i in range(15)]
    store.add(recs, fresh, world.ident.key, None)
    assert in_thread(lambda: search_ids(store, world, fresh[4], k=1)) == [recs[4].id]
    assert held.started.wait(30)
    hits = sum(len(set(search_ids(store, world, q)) & set(world.exact(q))) for q in QUERIES)
    assert hits >= 0.9 * 10 * len(QUERIES)
    held.release.set()
    finish_builds(store, world)
    assert search_ids(store, world, fresh[9], k=1) == [recs[9].id]
    store.close()


def test_without_an_index_narrow_searches_are_exact_and_wide_ones_503(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "EXACT_ROWS", 200)  # u1 (150 rows) is narrow, the store is not
    world = make_world(tmp_path)
    drop_index(world)
    held = HeldBuild()
    store = serving(world, held)
    exact = SQLiteStore(world.path)
    key = world.ident.key
    with pytest.raises(IndexBuilding, match=r"being built \(\d+% done") as caught:
        in_thread(lambda: store.search(QUERIES[0], key, None, 10))
    assert "retry" in (caught.value.hint or "")
    status, body = error_body(caught.value, str, "rid")
    assert status == 503 and body["error"] == "index_building"
    assert held.started.wait(30)
    same_as_exact(store, exact, world, "u1")
    added = record("new in u1", user_id="u1")
    fresh = vectors(1, DIMS, seed=70)
    in_thread(lambda: store.add([added], fresh, key, None))
    in_thread(lambda: store.delete([world.ids[0]], None))  # a u1 memory
    assert search_ids(store, world, fresh[0], "u1", k=1) == [added.id]
    same_as_exact(store, exact, world, "u1")
    assert store._searchers.builds()[0].state is BuildState.BUILDING
    held.release.set()
    finish_builds(store, world)
    assert search_ids(store, world, fresh[0], k=1) == [added.id]
    assert world.ids[0] not in search_ids(store, world, world.matrix[0], k=20)
    store.close()


def test_the_cli_waits_for_the_build_without_the_stores_lock(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    drop_index(world)
    held = HeldBuild()
    store = world.open()  # waits, as `memvault search` does
    store.show_index_builds(held)
    searching = threading.Thread(
        target=lambda: search_ids(store, world, QUERIES[0]), daemon=True)
    searching.start()
    assert held.started.wait(30)
    assert searching.is_alive()  # waiting for the build...
    added = record("written while a search waits")
    in_thread(lambda: store.add([added], vectors(1, DIMS, seed=80), world.ident.key, None))
    held.release.set()
    searching.join(30)
    assert not searching.is_alive()
    assert search_ids(store, world, vectors(1, DIMS, seed=80)[0], k=1) == [added.id]
    store.close()


@pytest.mark.usefixtures("small_rebuilds")
def test_an_overlay_past_its_bound_stops_serving_until_the_rebuild(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ann, "EXACT_ROWS", 200)
    caplog.set_level(logging.INFO, logger="memvault.store.sqlite")
    world = make_world(tmp_path)
    held = HeldBuild()
    store = serving(world, held)
    key = world.ident.key
    store.add([record(f"a{i}") for i in range(12)], vectors(12, DIMS, seed=90), key, None)
    in_thread(lambda: search_ids(store, world, QUERIES[0]))
    assert held.started.wait(30)
    more = [record(f"b{i}") for i in range(10)]
    store.add(more, vectors(10, DIMS, seed=91), key, None)  # 22 changes > 2 x 10
    with pytest.raises(IndexBuilding):
        in_thread(lambda: search_ids(store, world, QUERIES[0]))
    assert any("more than the 20 it follows" in r.getMessage() for r in caplog.records)
    assert len(search_ids(store, world, QUERIES[0], "u1")) == 10  # narrow: still answered
    held.release.set()
    finish_builds(store, world)
    assert search_ids(store, world, vectors(10, DIMS, seed=91)[3], k=1) == [more[3].id]
    store.close()


def test_a_failed_build_is_logged_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="memvault.store.sqlite")
    world = make_world(tmp_path)
    drop_index(world)
    monkeypatch.setattr(ann_builder, "RETRY_DELAYS_S", (0.0, 0.0))
    real = ann_builder.build
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ann_builder, "build", flaky)
    store = world.open()
    assert search_ids(store, world, world.matrix[3], k=1) == [world.ids[3]]
    status = store._searchers.builds()[0]
    assert (status.builds, status.failures, len(calls)) == (1, 1, 2)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("failed (attempt 1 of 3" in m and "No space left" in m for m in errors), errors
    assert any("built in" in r.getMessage() for r in caplog.records)
    store.close()


def test_a_build_that_keeps_failing_leaves_nothing_trusted_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "EXACT_ROWS", 200)
    world = make_world(tmp_path)
    drop_index(world)
    monkeypatch.setattr(ann_builder, "RETRY_DELAYS_S", (0.0, 0.0))

    def dies_in_commit(stem: Path, staged: dict[str, Path], header: object) -> object:
        os.replace(staged["hnsw"], part_path(stem, "hnsw"))  # one part moved, then the disk
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ann_build, "commit", dies_in_commit)
    store = world.open()
    with pytest.raises(StoreError, match=r"could not be built.*Input/output error"):
        search_ids(store, world, QUERIES[0])
    status = store._searchers.builds()[0]
    assert status.state is BuildState.FAILED and status.failures == 3
    assert world.header() is None and world.part("hnsw").exists()  # nothing to trust
    assert not list(tmp_path.glob("m.db.vindex-*.tmp*"))
    assert len(search_ids(store, world, QUERIES[0], "u1")) == 10  # narrow: still answered
    report = store.index_builds()[0]  # what GET /status shows
    assert report["state"] == "failed" and "Input/output error" in str(report["last_error"])
    samples = {(s.name, s.labels.get("result")): s.value
               for family in index_build_metrics(store.index_builds()) for s in family.samples}
    assert samples[("memvault_vector_index_builds_total", "failed")] == 3
    assert samples[("memvault_vector_index_builds_total", "built")] == 0
    assert samples[("memvault_vector_index_building", None)] == 0
    store.close()
    monkeypatch.undo()
    store = world.open()  # the next start builds it
    assert search_ids(store, world, world.matrix[5], k=1) == [world.ids[5]]
    assert world.header() is not None
    store.close()


def test_search_results_keep_their_shape(tmp_path: Path) -> None:
    """A sanity check of the exact reads that answer while no index serves."""
    world = make_world(tmp_path)
    drop_index(world)
    held = HeldBuild()
    store = serving(world, held)
    hits = in_thread(lambda: store.search(world.matrix[1], world.ident.key, None, 3,
                                          threshold=0.0))
    assert isinstance(hits, list) and hits[0][0].id == world.ids[1]
    assert hits[0][1] == pytest.approx(float(np.dot(world.matrix[1], world.matrix[1])))
    held.release.set()
    store.close()


def test_closing_the_store_stops_its_build_and_commits_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="memvault.store.sqlite")
    world = make_world(tmp_path)
    drop_index(world)
    held = HeldBuild()
    store = serving(world, held)
    in_thread(lambda: store.search(QUERIES[0], world.ident.key, None, 10))  # exact meanwhile
    assert held.started.wait(30)
    closer = threading.Thread(target=store.close, daemon=True)
    closer.start()
    # returns once the store is closing (the held build itself is still running)
    in_thread(lambda: store._searchers.wait_for_build(world.ident.key))
    held.release.set()
    closer.join(30)
    assert not closer.is_alive()
    assert world.header() is None and not world.part("hnsw").exists()
    assert not list(tmp_path.glob("m.db.vindex-*.tmp*"))
    assert any("stopped: the store closed" in r.getMessage() for r in caplog.records)


def test_a_restored_store_builds_its_index_at_once(tmp_path: Path) -> None:
    """What a restore calls after loading starts the build without waiting for a search: a
    server's beside its requests, a one-shot command's before it returns (the store is left
    with a trusted index for the server that opens it next)."""
    world = make_world(tmp_path)
    drop_index(world)
    held = HeldBuild()
    store = serving(world, held)
    in_thread(store.build_search_indexes)  # returns while the build runs
    assert held.started.wait(30)
    assert [b["state"] for b in store.index_builds()] == [BuildState.BUILDING.value]
    held.release.set()
    finish_builds(store, world)
    assert world.header() is not None
    store.close()
    drop_index(world)
    store = world.open()  # waits, as `memvault restore` does
    store.build_search_indexes()
    assert world.header() is not None
    assert [(b["state"], b["builds"]) for b in store.index_builds()] == [("idle", 1)]
    store.close()
    small = SQLiteStore(world.path, ann_threshold=len(world.ids) + 1)
    drop_index(world)
    small.build_search_indexes()  # below the threshold: nothing to build
    assert small.index_builds() == [] and world.header() is None
    small.close()
