"""Building a SQLite store's approximate index in the background, never under the store's lock.

A build runs in a daemon thread of its own (at most one per embedder and store), reads the store
through its own connection (one WAL snapshot up to a journal seq S: writers go on), takes the
cross-process build lock (so two processes wanting a build make one: the second finds the first
one's index trusted), commits the files as `ann_build` always did and opens the result only if
`check` trusts it. It then catches the new index up from S through the journal, still on its own
connection, and leaves it for the next search to swap in under the store's lock (which then has
only the last few changes to replay). A failed build is logged with its cause and retried a
bounded number of times; a failed build never leaves files that `check` trusts.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from memvault.errors import StoreError
from memvault.progress import Advance, NoProgress, Progress
from memvault.store.sqlite.ann import AnnIndex
from memvault.store.sqlite.ann_build import build, build_lock
from memvault.store.sqlite.ann_file import stem_for
from memvault.store.sqlite.index_sync import read_journal

log = logging.getLogger("memvault.store.sqlite")

# A build that fails is tried again after these pauses, then given up for FAILED_COOLDOWN_S
# (a full disk or a broken file does not heal in seconds; the log and /status say why).
RETRY_DELAYS_S = (5.0, 30.0)
FAILED_COOLDOWN_S = 600.0
CLOSE_WAIT_S = 30.0  # how long closing the store waits for a build to notice it must stop


class BuildState(Enum):
    IDLE = "idle"
    BUILDING = "building"
    READY = "ready"  # built and caught up, swapped in at the next search
    FAILED = "failed"


@dataclass(frozen=True)
class BuildStatus:
    """One embedder's index builds in this process, as /status and /metrics show them."""

    embedder_key: str
    state: BuildState = BuildState.IDLE
    cause: str = ""
    min_seq: int = 0  # a trusted index built at this seq or later serves instead of a build
    started_at: float | None = None  # time.time() of the current or last build
    done: int = 0
    total: int = 0
    attempt: int = 0
    builds: int = 0  # completed in this process
    failures: int = 0  # failed attempts in this process
    last_duration_s: float | None = None
    last_error: str | None = None
    retry_at: float | None = None  # time.monotonic() after which a FAILED build starts again

    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    def seconds_left(self) -> float | None:
        if not self.done or self.started_at is None:
            return None
        return (time.time() - self.started_at) * (self.total - self.done) / self.done

    def report(self) -> dict[str, object]:
        return {"embedder": self.embedder_key, "state": self.state.value, "cause": self.cause,
                "percent": self.percent(), "started_at": self.started_at,
                "builds": self.builds, "failures": self.failures,
                "last_duration_s": self.last_duration_s, "last_error": self.last_error}


class BuildCancelled(Exception):
    """The store closed while its index was being built."""


class IndexBuilder:
    """The background builds of one store. Thread-safe; never touches the store's connection
    except to hand it to the index it opens (which reads on it once swapped in, under the
    store's lock)."""

    def __init__(self, db_path: Path, serve_on: sqlite3.Connection,
                 progress: Callable[[], Progress | None]) -> None:
        self._db_path = db_path
        self._serve_on = serve_on
        self._progress = progress  # where a build draws its progress (a CLI bar, a test hook)
        self._cond = threading.Condition()
        self._status: dict[str, BuildStatus] = {}
        self._ready: dict[str, AnnIndex] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()

    # ------------------------------------------------------------------ for the searchers

    def start(self, embedder_key: str, dims: int, cause: str, min_seq: int) -> None:
        """Build `embedder_key`'s index in the background unless one is being built or ready,
        or the last one failed less than FAILED_COOLDOWN_S ago."""
        with self._cond:
            status = self._status.get(embedder_key, BuildStatus(embedder_key))
            if self._stop.is_set() or status.state in (BuildState.BUILDING, BuildState.READY):
                return
            if (status.state is BuildState.FAILED and status.retry_at is not None
                    and time.monotonic() < status.retry_at):
                return
            self._status[embedder_key] = dataclasses.replace(
                status, state=BuildState.BUILDING, cause=cause, min_seq=min_seq,
                started_at=time.time(), done=0, total=0, attempt=0, retry_at=None)
            thread = threading.Thread(target=self._run, args=(embedder_key, dims),
                                      name=f"memvault-index-build-{embedder_key}", daemon=True)
            self._threads[embedder_key] = thread
            thread.start()

    def status(self, embedder_key: str) -> BuildStatus:
        with self._cond:
            return self._status.get(embedder_key, BuildStatus(embedder_key))

    def statuses(self) -> list[BuildStatus]:
        with self._cond:
            return list(self._status.values())

    def take(self, embedder_key: str) -> AnnIndex | None:
        """The index a finished build left, once (the caller serves it from now on)."""
        with self._cond:
            index = self._ready.pop(embedder_key, None)
            if index is not None:
                self._update(embedder_key, state=BuildState.IDLE)
            return index

    def wait(self, embedder_key: str) -> None:
        """Block until `embedder_key`'s build is no longer running (callers hold no lock)."""
        with self._cond:
            self._cond.wait_for(lambda: self._stop.is_set() or self._status.get(
                embedder_key, BuildStatus(embedder_key)).state is not BuildState.BUILDING)

    def close(self) -> None:
        """Stop the builds (at their next batch; nothing half-built is committed)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(CLOSE_WAIT_S)
            if thread.is_alive():
                log.error("vector index build of %s still running %.0f s after the store "
                          "closed; it commits nothing once it sees the store closed",
                          self._db_path, CLOSE_WAIT_S)

    # ------------------------------------------------------------------ the build thread

    def _update(self, embedder_key: str, **fields: object) -> None:
        """Change one status (the caller holds `_cond`)."""
        status = self._status.get(embedder_key, BuildStatus(embedder_key))
        self._status[embedder_key] = dataclasses.replace(status, **fields)  # type: ignore[arg-type]
        self._cond.notify_all()

    def _run(self, embedder_key: str, dims: int) -> None:
        status = self.status(embedder_key)
        attempts = len(RETRY_DELAYS_S) + 1
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            with self._cond:
                self._update(embedder_key, attempt=attempt, done=0, started_at=time.time())
            try:
                index, built = self._build(embedder_key, dims, status)
            except BuildCancelled:
                log.info("vector index build of %s stopped: the store closed", self._db_path)
                with self._cond:
                    self._update(embedder_key, state=BuildState.IDLE)
                return
            except Exception as exc:  # any failure: logged with its cause, retried, counted
                error = f"{type(exc).__name__}: {exc}"
                log.error("building the vector index of %s failed (attempt %d of %d; built "
                          "because %s): %s", self._db_path, attempt, attempts, status.cause,
                          error, exc_info=True)
                with self._cond:
                    failures = self._status[embedder_key].failures + 1
                    self._update(embedder_key, failures=failures, last_error=error)
                if attempt < attempts and not self._stop.wait(RETRY_DELAYS_S[attempt - 1]):
                    continue
                break
            duration = time.perf_counter() - started
            log.info("vector index of %s %s in %.1f s (because %s); served from the next "
                     "search", self._db_path, "built" if built else "built by another process",
                     duration, status.cause)
            with self._cond:
                self._ready[embedder_key] = index
                self._update(embedder_key, state=BuildState.READY, last_duration_s=duration,
                             builds=self._status[embedder_key].builds + built, last_error=None)
            return
        with self._cond:
            self._update(embedder_key, state=BuildState.FAILED,
                         retry_at=time.monotonic() + FAILED_COOLDOWN_S)
        if not self._stop.is_set():
            log.error("the vector index of %s could not be built; searches that need it fail "
                      "until a build is tried again in %.0f s", self._db_path, FAILED_COOLDOWN_S)

    def _build(self, embedder_key: str, dims: int, status: BuildStatus
               ) -> tuple[AnnIndex, bool]:
        """The new index, and whether this process built it (else another one did)."""
        stem = stem_for(self._db_path, embedder_key)
        conn = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=False)
        try:
            with build_lock(stem):
                index = AnnIndex.trusted(conn, stem, embedder_key, status.min_seq, quiet=True,
                                         serve_on=self._serve_on)
                built = index is None
                if built:  # not built by another process while this one waited
                    log.warning("building the vector index of %s in the background (%s)",
                                self._db_path, status.cause)
                    build(self._db_path, stem, embedder_key, dims, self._tracker(embedder_key))
                    index = AnnIndex.trusted(conn, stem, embedder_key, 0,
                                             serve_on=self._serve_on)
                if index is None:
                    raise StoreError(f"the vector index just built at {stem} does not verify",
                                     hint="check the disk (free space, errors); it is retried")
            # the writes made during the build, replayed here rather than under the store's lock
            index.sync(lambda after, limit: read_journal(conn, after, limit),
                       index.hard_limit(), conn)
            return index, built
        finally:
            conn.close()

    def _tracker(self, embedder_key: str) -> Progress:
        builder = self

        class Tracker:
            def task(self, description: str, total: int | None) -> Advance:
                forward = (builder._progress() or NoProgress()).task(description, total)
                with builder._cond:
                    builder._update(embedder_key, total=total or 0)

                def advance(n: int) -> None:
                    if builder._stop.is_set():
                        raise BuildCancelled
                    with builder._cond:
                        builder._update(embedder_key,
                                        done=builder._status[embedder_key].done + n)
                    if n:
                        forward(n)

                return advance

        return Tracker()
