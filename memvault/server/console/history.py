"""Memories over time, from the journal: every ADD adds one to its namespace at its time, every
DELETE takes one away. The journal is read once, then only its new entries on each look (the
per-second changes are kept, not the entries), so the chart costs one short query per view.

The journal does not always start at an empty store (a restore or an import loads memories
without entries), so the series is anchored at the end: the store's counts now, minus the
changes the journal recorded, is where it began."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from memvault.memory import Memory
from memvault.store import ENTITY_KEYS, JournalEntry, namespace_key

log = logging.getLogger("memvault.server")

BATCH = 2_000
MAX_POINTS = 240  # a chart is at most this many points wide
MAX_BUCKETS = 20_000  # stretches of time kept; older ones are merged beyond this
KEEP_FINE = 1_000  # the newest stretches keep their one-second step


@dataclass(frozen=True)
class Point:
    at: str  # when (ISO, UTC, to the second, minute, hour or day) the count was reached
    total: int


@dataclass(frozen=True)
class Drop:
    """The largest fall from a running peak to a later low, in memories."""

    peak: int
    peak_at: str
    low: int
    low_at: str

    @property
    def size(self) -> int:
        return self.peak - self.low

    @property
    def ratio(self) -> float:
        return self.size / self.peak if self.peak else 0.0


@dataclass(frozen=True)
class Series:
    points: list[Point]
    now: int
    drop: Drop | None


def _namespace(data: dict[str, Any] | None) -> str:
    data = data or {}
    return namespace_key(*(data.get(k) for k in ENTITY_KEYS))


def _change(entry: JournalEntry) -> tuple[str, int] | None:
    if entry.op == "ADD":
        return _namespace(entry.after), 1
    if entry.op == "DELETE":
        return _namespace(entry.before), -1
    return None  # an update keeps its namespace (ids are not editable)


@dataclass
class Bucket:
    """The changes of one stretch of time: the net change per namespace, and the path of the
    total within it (its turning points, as offsets from the stretch's start), so a fall and
    a rise inside one stretch both stay visible."""

    changes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    path: list[int] = field(default_factory=list)

    def add(self, namespace: str, delta: int) -> None:
        self.changes[namespace] += delta
        self._step((self.path[-1] if self.path else 0) + delta)

    def _step(self, offset: int) -> None:
        path = self.path
        before = path[-2] if len(path) >= 2 else 0  # a stretch starts at offset 0
        if path and (path[-1] - before) * (offset - path[-1]) >= 0:
            path[-1] = offset  # same direction: one longer run
        else:
            path.append(offset)

    def absorb(self, later: Bucket) -> None:
        base = self.path[-1] if self.path else 0
        for namespace, delta in later.changes.items():
            self.changes[namespace] += delta
        for offset in later.path:
            self._step(base + offset)


class CountHistory:
    """Per-second changes of the memory count (coarsened to minutes, then hours, when the
    history grows past MAX_BUCKETS), read incrementally from the store's journal."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self._lock = threading.Lock()
        self._store_id: str | None = None
        self._after_seq = 0
        self._buckets: dict[str, Bucket] = {}

    def _catch_up(self, yielding: bool = False) -> None:
        """Read the journal's new entries. `yielding` (the background read): after each batch,
        pause as long as it took, so requests served meanwhile get the interpreter half the
        time instead of a sliver of it."""
        store = self.memory.store
        while True:
            started = time.perf_counter()
            entries = store.journal(self._after_seq, BATCH)
            for entry in entries:
                change = _change(entry)
                if change is not None:
                    self._bucket(entry.ts[:19]).add(*change)
                self._after_seq = max(self._after_seq, entry.seq)
            if len(entries) < BATCH:
                return
            if yielding:
                time.sleep(time.perf_counter() - started)

    def _bucket(self, key: str) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._coarsen()
            bucket = self._buckets.setdefault(key, Bucket())
        return bucket

    def _coarsen(self) -> None:
        """Merge all but the newest KEEP_FINE buckets into minutes, or hours if that is not
        enough (a long history keeps its shape at a coarser step)."""
        for width in (16, 13, 10):  # minute, hour, day
            keys = sorted(self._buckets)
            merged: dict[str, Bucket] = {}
            for key in keys[:-KEEP_FINE]:
                target = merged.setdefault(key[:width], Bucket())
                target.absorb(self._buckets[key])
            merged.update((key, self._buckets[key]) for key in keys[-KEEP_FINE:])
            self._buckets = merged
            if len(merged) < MAX_BUCKETS // 2:
                return

    def start(self) -> None:
        """Read the journal in the background (at 100k entries it takes seconds), so that no
        page view waits for the first read."""
        threading.Thread(target=self._first_read, name="memvault-console-history",
                         daemon=True).start()

    def _first_read(self) -> None:
        try:
            store_id = self.memory.store.meta().store_id
            with self._lock:
                self._read(store_id, yielding=True)
        except Exception:
            log.exception("the console could not read the journal for its count history "
                          "(the page retries at its next view)")

    def _read(self, store_id: str, yielding: bool = False) -> None:
        if store_id != self._store_id:  # another store now: its own journal from the start
            self._store_id, self._after_seq = store_id, 0
            self._buckets = {}
        self._catch_up(yielding)

    def series(self, store_id: str, counts: dict[str, int],
               namespaces: set[str] | None = None) -> Series | None:
        """The total over time of `namespaces` (None: all), ending at `counts` (the counts now
        of the store `store_id`), at most MAX_POINTS points; None while another thread is
        reading the journal (a view never waits for the first read)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._read(store_id)
            buckets = sorted(self._buckets.items())
            wanted = (lambda ns: True) if namespaces is None else namespaces.__contains__
            now = sum(n for ns, n in counts.items() if wanted(ns))
            steps: list[tuple[str, list[int]]] = []
            for key, bucket in buckets:
                if namespaces is None:
                    path = bucket.path
                else:
                    net = sum(d for ns, d in bucket.changes.items() if wanted(ns))
                    path = [net] if net else []
                if path:
                    steps.append((key, path))
        finally:
            self._lock.release()
        running = now - sum(path[-1] for _, path in steps)
        points = []
        for key, path in steps:
            points += [Point(key, running + offset) for offset in path]
            running += path[-1]
        return Series(_thin(points), now, _largest_drop(points))


def _largest_drop(points: list[Point]) -> Drop | None:
    best: Drop | None = None
    peak: Point | None = None
    for point in points:
        if peak is None or point.total > peak.total:
            peak = point
        elif best is None or peak.total - point.total > best.size:
            best = Drop(peak.total, peak.at, point.total, point.at)
    return best if best is not None and best.size > 0 else None


def _thin(points: list[Point]) -> list[Point]:
    """At most MAX_POINTS points, keeping each stretch's lowest and highest (a drop stays
    visible however long the history)."""
    if len(points) <= MAX_POINTS:
        return points
    size = -(-len(points) // (MAX_POINTS // 2))
    kept: list[int] = []
    for start in range(0, len(points), size):
        stretch = range(start, min(start + size, len(points)))
        low = min(stretch, key=lambda i: points[i].total)
        high = max(stretch, key=lambda i: points[i].total)
        kept += sorted({low, high})
    if kept[-1] != len(points) - 1:
        kept.append(len(points) - 1)
    return [points[i] for i in kept]
