"""A damaged, stale, foreign or half-written approximate index is detected at open, rebuilt and
never served: every search after the damage answers as exact search does."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memvault.store.sqlite import ann
from memvault.store.sqlite.ann_file import DATA_PARTS, checksum
from tests.ann_world import DIMS, World, make_world, rewrite_header, search_ids, served_by_index
from tests.helpers import record, vectors

QUERIES = vectors(10, DIMS, seed=42)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _through_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """These stores are small: below EXACT_ROWS every search would be exact from SQLite."""
    monkeypatch.setattr(ann, "EXACT_ROWS", 50)


def assert_rebuilt_and_right(world: World, caplog: pytest.LogCaptureFixture, why: str) -> None:
    """Opening the damaged world warns with the cause, rebuilds, and answers correctly."""
    caplog.set_level(logging.INFO, logger="memvault.store.sqlite")
    store = world.open()
    assert served_by_index(store, world)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("not trusted" in m and why in m for m in warnings), warnings
    assert any("building the vector index" in m for m in warnings), warnings
    header = world.header()
    assert header is not None
    for part in DATA_PARTS:  # what is served now is what the header vouches for
        assert checksum(world.part(part)) == header.files[part][1]
    hits = sum(len(set(search_ids(store, world, q)) & set(world.exact(q))) for q in QUERIES)
    assert hits >= 0.95 * 10 * len(QUERIES)
    store.close()


@pytest.mark.parametrize("part", DATA_PARTS)
def test_a_flipped_bit_is_detected(tmp_path: Path, part: str,
                                   caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(tmp_path)
    path = world.part(part)
    seed = random.randrange(2**32)
    print(f"bit-flip seed {seed}")
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    offset = rng.randrange(len(data))
    data[offset] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    assert_rebuilt_and_right(world, caplog, "checksum")


def test_a_truncated_graph_is_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(tmp_path)
    path = world.part("hnsw")
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    assert_rebuilt_and_right(world, caplog, "truncated")


def test_a_missing_or_garbled_header_is_rebuilt(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(tmp_path)
    world.part("json").write_text("{not json")
    assert_rebuilt_and_right(world, caplog, "no readable header")


def test_another_stores_index_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                         ) -> None:
    world = make_world(tmp_path / "a")
    other = make_world(tmp_path / "b", seed=1)  # same embedder, same size: only the id differs
    for part in (*DATA_PARTS, "json"):
        shutil.copyfile(other.part(part), world.part(part))
    assert_rebuilt_and_right(world, caplog, "another store")


def test_an_index_from_a_rewritten_history_is_refused(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(tmp_path)
    header = world.header()
    assert header is not None
    with sqlite3.connect(world.path) as conn:  # the store's history at that seq differs now
        conn.execute("UPDATE journal SET ts = '1999-01-01T00:00:00+00:00' WHERE seq = ?",
                     (header.seq,))
    assert_rebuilt_and_right(world, caplog, "journal does not have")


def test_an_index_from_the_future_is_refused(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(tmp_path)
    header = world.header()
    assert header is not None
    rewrite_header(world, seq=header.seq + 5)  # e.g. the store was restored to an older state
    assert_rebuilt_and_right(world, caplog, "journal does not have")


def test_a_stale_index_is_caught_up_never_served_as_is(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    saved = tmp_path / "saved"
    saved.mkdir()
    for part in (*DATA_PARTS, "json"):
        shutil.copyfile(world.part(part), saved / part)
    store = world.open()
    later = vectors(3, DIMS, seed=77)
    recs = [record(f"after the copy {i}") for i in range(3)]
    store.add(recs, later, world.ident.key, None)
    store.delete([world.ids[5]], None)
    store.close()
    for part in (*DATA_PARTS, "json"):  # the older index comes back
        shutil.copyfile(saved / part, world.part(part))
    store = world.open()
    assert search_ids(store, world, later[1], k=1) == [recs[1].id]
    assert world.ids[5] not in search_ids(store, world, world.matrix[5], k=10)


def _child(world: World, body: str) -> subprocess.CompletedProcess[bytes]:
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from memvault.store.sqlite import ann_build, ann_file
        from memvault.store.sqlite.ann_file import stem_for
        db = Path({str(world.path)!r})
        key = {world.ident.key!r}
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], env={**os.environ,
                          "PYTHONPATH": str(ROOT)}, capture_output=True, check=False)


def test_kill_9_between_renames_leaves_nothing_trusted(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(tmp_path)
    store = world.open()
    store.add([record("one more")], vectors(1, DIMS, seed=3), world.ident.key, None)
    store.close()
    # the rebuild dies after its graph replaced the old one, before the header moved
    done = _child(world, """
        real = os.replace
        def dying(src, dst):
            real(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)
        ann_file.os.replace = dying
        ann_build.build(db, stem_for(db, key), key, 16)
    """)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    old = world.header()
    assert old is not None and checksum(world.part("hnsw")) != old.files["hnsw"][1]
    assert_rebuilt_and_right(world, caplog, "hnsw")


def test_kill_9_while_adding_leaves_the_old_index_and_no_leftovers(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m.db.vindex-*")}
    done = _child(world, """
        class Dies:
            def task(self, description, total):
                def advance(n):
                    os.kill(os.getpid(), signal.SIGKILL)
                return advance
        ann_build.build(db, stem_for(db, key), key, 16, Dies())
    """)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    after = {p.name: p.read_bytes() for p in tmp_path.glob("m.db.vindex-*")}
    assert after == before  # nothing staged yet: the complete old index is untouched
    store = world.open()
    assert served_by_index(store, world)
    header = world.header()
    assert header is not None and json.loads(world.part("json").read_text())["seq"] == header.seq


@pytest.mark.parametrize("where", ["in a batch", "between renames"])
@pytest.mark.parametrize("case", ["rebuild", "first build"])
def test_kill_9_in_a_background_build_leaves_nothing_trusted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, where: str) -> None:
    world = make_world(tmp_path)
    monkeypatch.setattr(ann, "REBUILD_MIN_CHANGES", 10)
    monkeypatch.setattr(ann, "REBUILD_FRACTION", 0.0)
    store = world.open()
    later = vectors(20, DIMS, seed=13)
    recs = [record(f"written before the kill {i}") for i in range(20)]
    store.add(recs, later, world.ident.key, None)  # 20 changes: the next search rebuilds
    store.close()
    if case == "first build":
        for part in (*DATA_PARTS, "json"):
            world.part(part).unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m.db.vindex-*")}
    patch, progress = (("ann_file.os.replace = dying", "None") if where == "between renames"
                       else ("", "Dies()"))
    done = _child(world, f"""
        import numpy as np
        from memvault.store.sqlite import SQLiteStore, ann
        ann.REBUILD_MIN_CHANGES, ann.REBUILD_FRACTION = 10, 0.0
        real = os.replace
        def dying(src, dst):
            real(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)
        class Dies:
            def task(self, description, total):
                return lambda n: os.kill(os.getpid(), signal.SIGKILL)
        {patch}
        # as a server opens it: builds run behind its searches
        store = SQLiteStore(db, ann_threshold=500, progress={progress})
        try:
            store.search(np.ones(16, dtype=np.float32) / 4, key, None, 3)
        except Exception as exc:  # no index yet: told to retry
            print(type(exc).__name__)
        store._searchers.wait_for_build(key)
        raise SystemExit("the build was not killed")
    """)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    header = world.header()
    after = {p.name: p.read_bytes() for p in tmp_path.glob("m.db.vindex-*")}
    if header is not None and after != before:  # a new part in place: its header disagrees
        assert any(checksum(world.part(p)) != header.files[p][1] for p in DATA_PARTS)
    assert header is None or header.seq == 1500  # never the half-built one's
    store = world.open()  # the next open builds again and answers right
    assert search_ids(store, world, later[7], k=1) == [recs[7].id]
    header = world.header()
    assert header is not None and header.seq == 1520
    assert not list(tmp_path.glob("m.db.vindex-*.tmp*"))  # the killed build's leftovers
    store.close()
