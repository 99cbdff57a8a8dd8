"""Two processes that both want the same index rebuilt: exactly one builds it, the other waits
for the cross-process build lock and serves the first one's index."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO

import pytest

from memvault.store.sqlite import ann
from tests.ann_world import DIMS, World, make_world, search_ids
from tests.helpers import record, vectors

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60


def process(world: World, name: str, query: list[float], held: bool) -> subprocess.Popen[bytes]:
    """A server-like process: its search starts a background rebuild; `held`: the build waits
    for a line on stdin inside its first batch."""
    script = textwrap.dedent(f"""
        import logging, sys
        import numpy as np
        from memvault.store.sqlite import SQLiteStore, ann
        ann.REBUILD_MIN_CHANGES, ann.REBUILD_FRACTION = 10, 0.0
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        key = {world.ident.key!r}
        query = np.array({query!r}, dtype=np.float32)
        class Shown:
            def task(self, description, total):
                print("{name} builds", flush=True)
                def advance(n):
                    if n and {held!r}:
                        sys.stdin.readline()
                return advance
        store = SQLiteStore({str(world.path)!r}, ann_threshold=500, progress=Shown())
        store.search(query, key, None, 1)  # served by the old index; the rebuild starts
        store._searchers.wait_for_build(key)
        hits = store.search(query, key, None, 1)  # the new index swapped in
        print("{name} done", store._searchers.builds()[0].builds, hits[0][0].id, flush=True)
        store.close()
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def read_until(stream: IO[bytes] | None, text: str) -> str:
    """What `stream` says up to and including `text`; fails after DEADLINE_S."""
    assert stream is not None
    seen = b""
    end = time.monotonic() + DEADLINE_S
    while text.encode() not in seen:
        left = end - time.monotonic()
        assert left > 0, f"no {text!r} within {DEADLINE_S} s: {seen.decode()[-2000:]}"
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"the process ended before {text!r}: {seen.decode()[-2000:]}"
            seen += chunk
    return seen.decode()


def test_two_processes_wanting_a_rebuild_make_one(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path)
    store = world.open()
    fresh = vectors(20, DIMS, seed=17)
    recs = [record(f"later {i}") for i in range(20)]
    store.add(recs, fresh, world.ident.key, None)  # 20 changes: both processes want a rebuild
    store.close()
    first = process(world, "A", fresh[5].tolist(), held=True)
    second = None
    try:
        read_until(first.stdout, "A builds")  # A builds, held inside its first batch
        second = process(world, "B", fresh[5].tolist(), held=False)
        read_until(second.stderr, "another process is building it; waiting")
        assert first.stdin is not None
        first.stdin.write(b"go\n")
        first.stdin.flush()
        out_a, err_a = first.communicate(timeout=DEADLINE_S)
        out_b, err_b = second.communicate(timeout=DEADLINE_S)
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
    assert first.returncode == 0, err_a.decode()[-2000:]
    assert second.returncode == 0, err_b.decode()[-2000:]
    assert f"A done 1 {recs[5].id}" in out_a.decode()
    assert "B builds" not in out_b.decode()  # B never built: it served A's index
    assert f"B done 0 {recs[5].id}" in out_b.decode(), out_b.decode() + err_b.decode()[-2000:]
    assert "built by another process" in err_b.decode()
    header = world.header()
    assert header is not None and header.seq == 1520
    monkeypatch.setattr(ann, "REBUILD_MIN_CHANGES", 10)
    store = world.open()
    assert search_ids(store, world, fresh[9], k=1) == [recs[9].id]
    store.close()
