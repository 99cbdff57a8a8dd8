"""A small SQLite store above a lowered ANN threshold, and the exact answers to check it by."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memvault.embed.base import EmbedderIdentity
from memvault.progress import NoProgress
from memvault.store import parse_filters
from memvault.store.sqlite import SQLiteStore
from memvault.store.sqlite.ann import AnnIndex
from memvault.store.sqlite.ann_file import AnnHeader, part_path, read_header, stem_for
from tests.helpers import identity, prepared, record, vectors

DIMS = 16
THRESHOLD = 500


@dataclass
class World:
    path: Path
    ident: EmbedderIdentity
    ids: list[str]
    users: list[str]
    matrix: np.ndarray

    @property
    def stem(self) -> Path:
        return stem_for(self.path, self.ident.key)

    def header(self) -> AnnHeader | None:
        return read_header(self.stem)

    def part(self, name: str) -> Path:
        return part_path(self.stem, name)

    def open(self, threshold: int = THRESHOLD, waits: bool = True) -> SQLiteStore:
        """The store; `waits`: its searches wait for index builds, as `memvault search`'s do
        (False: a server's, served meanwhile or told to retry)."""
        store = SQLiteStore(self.path, ann_threshold=threshold)
        if waits:
            store.show_index_builds(NoProgress())
        return store

    def exact(self, query: np.ndarray, user: str | None = None, k: int = 10) -> list[str]:
        scores = self.matrix @ query
        if user is not None:
            scores = np.where(np.array(self.users) == user, scores, -np.inf)
        return [self.ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def make_world(root: Path, n: int = 1500, threshold: int = THRESHOLD, seed: int = 0) -> World:
    """n memories, 90% user u0 and 10% u1; searched once, so the index is built."""
    path = root / "m.db"
    store = SQLiteStore(path, ann_threshold=threshold)
    store.show_index_builds(NoProgress())  # the first search waits for the build
    ident = prepared(store, identity("ann", DIMS))
    users = ["u1" if i % 10 == 0 else "u0" for i in range(n)]
    recs = [record(f"memory {seed}-{i}", user_id=users[i]) for i in range(n)]
    matrix = vectors(n, DIMS, seed=seed)
    store.add(recs, matrix, ident.key, None)
    store.search(matrix[0], ident.key, None, 1)
    store.close()
    return World(path, ident, [r.id for r in recs], users, matrix)


def search_ids(store: SQLiteStore, world: World, query: np.ndarray, user: str | None = None,
               k: int = 10) -> list[str]:
    node = parse_filters({"user_id": user}) if user else None
    return [r.id for r, _ in store.search(query, world.ident.key, node, k)]


def served_by_index(store: SQLiteStore, world: World) -> bool:
    while (searcher := store._searchers.searcher(world.ident.key)) is None:
        store._searchers.wait_for_build(world.ident.key)
    return isinstance(searcher, AnnIndex)


def finish_builds(store: SQLiteStore, world: World) -> None:
    """Wait for a background build of the world's index, then let a search swap it in."""
    store._searchers.wait_for_build(world.ident.key)
    store.search(world.matrix[0], world.ident.key, None, 1)


def rewrite_header(world: World, **fields: object) -> None:
    path = world.part("json")
    raw = json.loads(path.read_text())
    raw.update(fields)
    path.write_text(json.dumps(raw))


def recall(store: SQLiteStore, world: World, queries: np.ndarray, user: str | None = None
           ) -> float:
    hits = sum(len(set(search_ids(store, world, q, user)) & set(world.exact(q, user)))
               for q in queries)
    return hits / (10 * len(queries))


class HeldBuild:
    """A Progress that holds an index build inside its first batch (graph filled, nothing
    written yet) until `release` is set: while `started` is set, a build is running."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.tasks = 0

    def task(self, description: str, total: int | None) -> Callable[[int], None]:
        self.tasks += 1

        def advance(n: int) -> None:
            self.started.set()
            if not self.release.wait(60):
                raise AssertionError("the held build was never released")

        return advance


def in_thread(work: Callable[[], object], timeout: float = 30) -> object:
    """Run `work` in a thread and return its result; fail if it does not finish in `timeout`
    seconds (what waiting for a held build looks like: it never finishes on its own)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{work} still blocked after {timeout} s"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result")
