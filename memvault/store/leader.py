"""Which replica runs the background jobs: one leader per store, elected by the database.

On PostgreSQL the leader is the process whose dedicated session holds a session-level advisory
lock. The lock lives exactly as long as that session: a leader killed with -9, or whose
connection dies, loses it when the server notices the session end, and a standby that retries
every `interval` takes over. A leader that freezes or is cut off (no connection reset) is
dropped by the server's `idle_session_timeout` (our session never idles longer than `interval`
while healthy), and steps down on its own side once it has not confirmed its session within
`lease`, so two leaders never both believe they lead for longer than that.

On SQLite one file has one writer process by design, so the elector always leads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from memvault.config import redact_url

if TYPE_CHECKING:
    from memvault.config import Settings

log = logging.getLogger("memvault.store.leader")


class LeaderElector(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def is_leader(self) -> bool: ...


class AlwaysLeader:
    """The SQLite elector: the process that has the store open leads."""

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def is_leader(self) -> bool:
        return True


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a job group name."""
    return int.from_bytes(hashlib.sha256(f"memvault:{name}".encode()).digest()[:8], "big",
                          signed=True)


class PostgresLeaderElector:
    """Session advisory lock on a dedicated connection, retried in a background thread."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "leader",
        interval: float = 1.0,
        timeout: float = 5.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.key = lock_key(name)
        self.interval = interval
        self.timeout = timeout
        # How long leadership holds without a confirmed round trip to the server.
        self.lease = max(3 * interval, timeout)
        self.on_change = on_change
        self._conn: psycopg.Connection[Any] | None = None
        self._leader = False
        self._confirmed = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self.tick()  # decide at once, so a lone replica leads from its first moment
        self._thread = threading.Thread(target=self._run, name=f"memvault-{self.name}-elector",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + self.interval)
            self._thread = None
        with self._lock:
            if self._conn is not None and not self._conn.closed and self._leader:
                # Closing the session releases the lock anyway; unlocking first is just polite.
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self._close()
            self._set(False)

    def is_leader(self) -> bool:
        return self._leader and time.monotonic() - self._confirmed < self.lease

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        """One round: (re)connect, then confirm leadership or try to take it."""
        from memvault.store.postgres import TimedConnection

        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = TimedConnection.connect(
                        self.url, autocommit=True, application_name=f"memvault-{self.name}",
                        connect_timeout=max(2, int(self.timeout)),
                        keepalives=1, keepalives_idle=1, keepalives_interval=1,
                        keepalives_count=3, tcp_user_timeout=int(self.timeout * 1000))
                    self._conn.deadline = self.timeout
                    try:
                        self._conn.execute(
                            f"SET idle_session_timeout = {int(self.lease * 1000)}")
                    except psycopg.errors.UndefinedObject:
                        log.warning("PostgreSQL < 14 has no idle_session_timeout: a frozen "
                                    "leader keeps its lock until its connection breaks")
                if self._leader:
                    self._conn.execute("SELECT 1")
                    self._confirmed = time.monotonic()
                else:
                    row = self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                             (self.key,)).fetchone()
                    self._confirmed = time.monotonic()
                    if row and row[0]:
                        self._set(True)
            except psycopg.Error as exc:
                log.warning("leader election for %s on %s: %s", self.name, redact_url(self.url),
                            str(exc).strip())
                self._close()
                self._set(False)

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _set(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        log.info("%s %s leadership of %s", "took" if leader else "lost", self.name,
                 redact_url(self.url))
        if self.on_change is not None:
            try:
                self.on_change(leader)
            except Exception:
                log.exception("leadership change callback failed")


# The advisory lock every job of a process leads under (one elector per process, shared by the
# guard, the backup scheduler and the drill: memvault/runtime.py). The name the backup jobs
# elected on before they shared one: during a rolling upgrade an old and a new replica still
# contend for it, so journal shipping never runs twice into one lineage.
JOBS_ELECTION = "backups"


def make_leader_elector(settings: Settings, name: str = "leader") -> LeaderElector:
    """The elector for the configured store (PostgreSQL: advisory lock; SQLite: always)."""
    url = settings.database_url or ""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLeaderElector(url, name=name, timeout=settings.db_timeout)
    return AlwaysLeader()
