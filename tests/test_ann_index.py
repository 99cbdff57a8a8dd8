"""The approximate index of a SQLite store above MEMVAULT_ANN_THRESHOLD: persisted, mapped at
open, exact in its scores and filters, and in step with writes from other processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from memvault.config import load_settings
from memvault.errors import StoreError
from memvault.store import open_store, parse_filters
from memvault.store.sqlite import ann, ann_builder
from tests.ann_world import (
    DIMS,
    finish_builds,
    make_world,
    recall,
    search_ids,
    served_by_index,
)
from tests.helpers import record, vectors

QUERIES = vectors(40, DIMS, seed=99)


@pytest.fixture(autouse=True)
def _through_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """These stores are small: below EXACT_ROWS every search would be exact from SQLite."""
    monkeypatch.setattr(ann, "EXACT_ROWS", 50)


def test_a_large_store_is_served_by_a_persisted_index_with_exact_scores(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    header = world.header()
    assert header is not None and header.count == 1500 and header.seq == 1500
    store = world.open()
    assert served_by_index(store, world)
    assert recall(store, world, QUERIES) >= 0.95
    hits = store.search(QUERIES[0], world.ident.key, None, 10)
    by_id = dict(zip(world.ids, world.matrix @ QUERIES[0], strict=True))
    for rec, score in hits:  # re-scored with the stored float32 vectors
        assert score == pytest.approx(float(by_id[rec.id]), abs=1e-6)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_a_small_store_keeps_exact_search_and_writes_no_index(tmp_path: Path) -> None:
    world = make_world(tmp_path, n=300)
    assert world.header() is None and not world.part("hnsw").exists()
    store = world.open()
    assert not served_by_index(store, world)
    for query in QUERIES[:5]:
        assert search_ids(store, world, query) == world.exact(query)


def test_the_setting_reaches_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMVAULT_ANN_THRESHOLD", "1234")
    settings = load_settings({"data_dir": tmp_path,
                              "database_url": f"sqlite:///{tmp_path / 'm.db'}"})
    store = open_store(settings)
    assert store.ann_threshold == 1234  # type: ignore[attr-defined]
    store.close()


def test_a_restart_maps_the_index_instead_of_rebuilding(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path)
    before = world.header()

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a trusted index was rebuilt")

    monkeypatch.setattr(ann_builder, "build", no_build)
    store = world.open()
    assert recall(store, world, QUERIES[:10]) >= 0.95
    assert world.header() == before


def test_a_threshold_raised_above_the_store_returns_to_exact_search(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    store = world.open(threshold=10_000)
    assert not served_by_index(store, world)
    assert search_ids(store, world, QUERIES[0]) == world.exact(QUERIES[0])


def test_filters_and_namespaces_stay_exact(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path)
    store = world.open()
    # u1 (150 rows) below EXACT_ROWS: searched exactly from the store
    monkeypatch.setattr(ann, "EXACT_ROWS", 1000)
    for query in QUERIES[:5]:
        assert search_ids(store, world, query, "u1") == world.exact(query, "u1")
    # forced through the graph: candidates post-filtered by namespace, still only u1's rows
    monkeypatch.setattr(ann, "EXACT_ROWS", 0)
    assert recall(store, world, QUERIES[:10], "u1") >= 0.9
    u1 = {i for i, u in zip(world.ids, world.users, strict=True) if u == "u1"}
    assert set(search_ids(store, world, QUERIES[0], "u1", k=50)) <= u1
    # a metadata filter on top (SQL-side) and a threshold
    tagged = record("tagged one", user_id="u0", metadata={"tag": "x"})
    store.add([tagged], QUERIES[1:2], world.ident.key, None)
    node = parse_filters({"user_id": "u0", "tag": "x"})
    assert [r.id for r, _ in store.search(QUERIES[1], world.ident.key, node, 10)] == [tagged.id]
    hits = store.search(QUERIES[2], world.ident.key, None, 10, threshold=0.5)
    assert all(score >= 0.5 for _, score in hits)
    # a pin that leaves fewer rows than top_k falls back to exact search
    assert search_ids(store, world, QUERIES[3], "nobody") == []


def test_writes_from_another_process_are_seen(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    store = world.open()
    assert served_by_index(store, world)
    search_ids(store, world, QUERIES[0])  # the index is mapped and in step
    fresh, moved = vectors(2, DIMS, seed=5)
    gone, changed = world.ids[0], world.ids[1]
    script = textwrap.dedent(f"""
        import numpy as np
        from memvault.store.sqlite import SQLiteStore
        from tests.helpers import record
        store = SQLiteStore({str(world.path)!r}, ann_threshold=500)
        key = {world.ident.key!r}
        store.add([record("written elsewhere", id="new-one", user_id="u0")],
                  np.array([{fresh.tolist()}], dtype=np.float32), key, "other")
        store.delete([{gone!r}], "other")
        old = store.get({changed!r})
        store.update(old.evolve(memory="moved", hash="moved"),
                     np.array({moved.tolist()}, dtype=np.float32), key, "other")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={
        **os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert search_ids(store, world, fresh, k=1) == ["new-one"]
    assert search_ids(store, world, moved, k=1) == [changed]
    assert gone not in search_ids(store, world, world.matrix[0], k=10)
    hits = store.search(world.matrix[1], world.ident.key, None, 1500)
    score = dict((r.id, s) for r, s in hits).get(changed)
    assert score is None or score == pytest.approx(float(moved @ world.matrix[1]), abs=1e-6)


def test_many_changes_since_the_build_trigger_a_rebuild(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path)
    monkeypatch.setattr(ann, "REBUILD_MIN_CHANGES", 10)
    monkeypatch.setattr(ann, "REBUILD_FRACTION", 0.0)
    store = world.open()
    extra = vectors(20, DIMS, seed=8)
    recs = [record(f"later {i}") for i in range(20)]
    store.add(recs, extra, world.ident.key, None)
    assert search_ids(store, world, extra[3], k=1) == [recs[3].id]
    finish_builds(store, world)
    header = world.header()
    assert header is not None and header.count == 1520 and header.seq == 1520


def test_re_embedding_rebuilds_the_index(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    store = world.open()
    before = world.header()
    assert before is not None
    rotated = np.roll(world.matrix, 1, axis=1)
    store.put_vectors(world.ids, rotated, world.ident.key)
    hits = store.search(rotated[7], world.ident.key, None, 1)
    assert hits[0][0].id == world.ids[7]
    after = world.header()
    assert after is not None and after.vectors_version != before.vectors_version


@pytest.mark.parametrize("threshold", [500, 10_000], ids=["approximate", "exact"])
def test_a_bulk_load_without_journal_by_another_process_is_seen(tmp_path: Path,
                                                               threshold: int) -> None:
    world = make_world(tmp_path, threshold=threshold)
    reader = world.open(threshold)
    search_ids(reader, world, QUERIES[0])  # this process's index is loaded and in step
    loader = world.open(threshold)  # another connection: what a restore or import process does
    extra = vectors(5, DIMS, seed=21)
    recs = [record(f"bulk {i}") for i in range(5)]
    loader.bulk_load(recs, {world.ident.key: extra}, journal=False)
    loader.close()
    assert search_ids(reader, world, extra[2], k=1) == [recs[2].id]


def test_a_missing_usearch_says_what_to_do(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path)
    monkeypatch.setitem(sys.modules, "usearch.index", None)  # import fails as if uninstalled
    store = world.open()
    with pytest.raises(StoreError, match="usearch") as caught:
        store.search(QUERIES[0], world.ident.key, None, 10)
    assert "MEMVAULT_ANN_THRESHOLD" in (caught.value.hint or "")


def test_a_cached_namespace_follows_later_writes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path)
    monkeypatch.setattr(ann, "EXACT_ROWS", 1000)  # u1 (150 rows) is searched exactly, cached
    reader = world.open()
    u1 = [i for i, u in zip(world.ids, world.users, strict=True) if u == "u1"]
    first = search_ids(reader, world, QUERIES[0], "u1", k=3)
    writer = world.open()
    fresh, moved = vectors(2, DIMS, seed=31)
    added = record("new in u1", user_id="u1")
    writer.add([added], fresh[None, :], world.ident.key, None)
    writer.delete([first[0]], None)
    old = writer.get(u1[7])
    assert old is not None
    writer.update(old.evolve(memory="moved u1", hash="moved u1"), moved, world.ident.key, None)
    writer.close()
    assert search_ids(reader, world, fresh, "u1", k=1) == [added.id]
    assert search_ids(reader, world, moved, "u1", k=1) == [u1[7]]
    fourth = world.exact(QUERIES[0], "u1", k=4)[3]
    # the deleted one is gone and top_k is still full
    assert search_ids(reader, world, QUERIES[0], "u1", k=3) == [*first[1:], fourth]
    assert len(search_ids(reader, world, QUERIES[0], "u1", k=200)) == 150  # 150 + 1 - 1


def test_the_bundled_embedder_loads_after_a_search(tmp_path: Path) -> None:
    """usearch's native library loaded before onnxruntime's crashed the process (SIGSEGV)."""
    world = make_world(tmp_path)
    script = textwrap.dedent(f"""
        import numpy as np
        from memvault.store.sqlite import SQLiteStore
        store = SQLiteStore({str(world.path)!r}, ann_threshold=500)
        store.search(np.ones({DIMS}, dtype=np.float32) / 4, {world.ident.key!r}, None, 3)
        from memvault.embed.local import LocalEmbedder
        print(LocalEmbedder().embed(["after the index"]).shape)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, env={
        **os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
