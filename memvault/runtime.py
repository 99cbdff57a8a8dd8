"""The composition root: the one place that builds the long-lived objects of a memvault process
and starts and stops them in a fixed order.

`Runtime(settings)` is what `memvault serve` runs: one `Memory` (its embedder behind the
batching wrapper, adds through the add batcher), and with `jobs=True` the SQLite writer lock,
ONE leader elector shared by every job, the backup scheduler, the guard and the drill job.
Every collaborator arrives through a constructor: the guard gets the elector and the scheduler,
the scheduler gets the elector's `is_leader` and the guard's `backup_hold`.

One elector, not one per job: the guard reports on the scheduler of its own process and alerts
only where it leads, so a scheduler leading on another replica than the guard would leave
BackupFailing, BackupInvalid, BackupStale and JournalLag unsent.

Start: elector, guard (its first check runs before the server takes requests, and holds the
backups until then), backup-age seeding, scheduler, drill. Stop, the other way round: drill,
guard (final ledger record), scheduler (final journal segment, heads marked stopped while still
leader), elector, batchers, writer lock, and the Memory if this runtime opened it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from memvault.embed.batching import BatchingEmbedder
from memvault.memory import Memory
from memvault.memory.batching import AddBatcher

if TYPE_CHECKING:
    from memvault.backup.safety import SafetySnapshots
    from memvault.backup.scheduler import BackupScheduler
    from memvault.config import Settings
    from memvault.guard.drill_job import DrillJob
    from memvault.guard.watchdog import Guard
    from memvault.store.leader import LeaderElector
    from memvault.store.writer_lock import WriterLock

log = logging.getLogger("memvault.runtime")


def server_embedder(settings: Settings) -> BatchingEmbedder:
    """The configured embedder as the server runs it: behind a batcher, which hands whatever
    texts are waiting to one model call. The bundled model runs each text alone on one core,
    two texts at a time (bench/bench_server.py: adds 88 -> 126/s against one at a time,
    searches unchanged)."""
    if settings.embedder == "local":
        from memvault.embed.local import LocalEmbedder

        return BatchingEmbedder(LocalEmbedder(threads=2))
    from memvault.embed import make_embedder

    return BatchingEmbedder(make_embedder(settings.embedder, settings))


class Runtime:
    """`memory`: use this one (not closed by `stop`), else one is opened from `settings`.
    `jobs`: build the writer lock, elector, scheduler, guard and drill job (`serve`); without
    them the runtime serves the API alone (tests, tools). `guard`: a guard started elsewhere
    whose verdict the API follows (tests); only without jobs."""

    def __init__(self, settings: Settings, memory: Memory | None = None, *, jobs: bool = True,
                 guard: Guard | None = None) -> None:
        if jobs and guard is not None:
            raise ValueError("a runtime with jobs builds its own guard")
        self.settings = settings
        self._owns_memory = memory is None
        self.memory = memory if memory is not None else Memory(
            settings, actor="api", embedder=server_embedder(settings))
        embedder = self.memory.embedder
        if not isinstance(embedder, BatchingEmbedder):
            # Concurrent requests share model calls (memvault/embed/batching.py).
            embedder = BatchingEmbedder(embedder)
            self.memory.use_embedder(embedder)
        self.embedder = embedder
        self.add_batcher = AddBatcher(self.memory)
        self.memory.use_safety_snapshots(self._safety_snapshots())
        self.guard = guard
        self._owns_guard = False
        self._closed = False
        self.writer_lock: WriterLock | None = None
        self.elector: LeaderElector | None = None
        self.scheduler: BackupScheduler | None = None
        self.drill: DrillJob | None = None
        self._api_scheduler: BackupScheduler | None = None
        self._lock = threading.Lock()
        self._started: list[str] = []
        if jobs:
            try:
                self._build_jobs()
            except BaseException:
                if self._owns_memory:
                    self.memory.close()
                raise

    def _build_jobs(self) -> None:
        from memvault.backup.scheduler import BackupScheduler
        from memvault.guard.drill_job import DrillJob
        from memvault.guard.watchdog import Guard
        from memvault.store.leader import JOBS_ELECTION, make_leader_elector
        from memvault.store.writer_lock import hold_writer_lock

        settings, memory = self.settings, self.memory
        # Taken before the server listens: a second server on the same SQLite file exits at
        # once naming the first's pid.
        self.writer_lock = hold_writer_lock(memory.store, "memvault serve")
        try:
            self.elector = make_leader_elector(settings, JOBS_ELECTION)
            self.scheduler = BackupScheduler(memory.store, settings,
                                             is_leader=self.elector.is_leader,
                                             hold=self._backup_hold)
            self.guard = Guard(settings, memory, elector=self.elector,
                               scheduler=self.scheduler)
            self._owns_guard = True
            self.drill = DrillJob(settings, memory, self.guard)
            self.guard.drill = self.drill  # the guard reads the drill's newest result
        except BaseException:
            if self.writer_lock is not None:
                self.writer_lock.release()
                self.writer_lock = None
            raise

    def _safety_snapshots(self) -> SafetySnapshots:
        """Safety snapshots (POST /reset, a wide delete) go through this process's scheduler:
        one journal shipper, one snapshot at a time."""
        from memvault.backup.safety import SafetySnapshots

        return SafetySnapshots(self.memory.store, self.settings,
                               take=lambda tag: self.backups().snapshot_now(True, tag))

    def _backup_hold(self) -> str | None:
        guard = self.guard
        return guard.backup_hold() if guard is not None else None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the jobs in order; a failing start stops what had started and re-raises."""
        from memvault.backup.clock import seed_backup_metrics

        try:
            self.memory.store.prime_keyword_statistics()
            if self.elector is not None:
                self.elector.start()
                self._started.append("elector")
            if self._owns_guard and self.guard is not None:
                self.guard.start()
                self._started.append("guard")
            if self.scheduler is not None:
                # Ages survive a restart: the last-success gauge comes from the newest valid
                # backup by seq, read in the background (a slow or dead destination must not
                # delay startup).
                threading.Thread(target=seed_backup_metrics, args=(self.scheduler.destinations,),
                                 name="memvault-backup-ages", daemon=True).start()
                self.scheduler.start()
                self._started.append("scheduler")
            if self.drill is not None:
                self.drill.start()
                self._started.append("drill")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop what was started, the other way round, then release what this runtime holds.
        Safe to call twice, and after a start that failed."""
        started, self._started = self._started, []
        for name, stop in (("drill", self._stop_drill), ("guard", self._stop_guard),
                           ("scheduler", self._stop_scheduler),
                           ("elector", self._stop_elector)):
            if name in started:
                try:
                    stop()
                except Exception:
                    log.exception("stopping the %s failed", name)
        self.add_batcher.stop()
        self.embedder.stop()

    def close(self) -> None:
        """`stop`, then release the writer lock and close the Memory this runtime opened."""
        self.stop()
        if self._closed:
            return
        self._closed = True
        lock, self.writer_lock = self.writer_lock, None
        if lock is not None:
            lock.release()
        if self._owns_memory:
            self.memory.close()

    def _stop_drill(self) -> None:
        assert self.drill is not None
        self.drill.stop()

    def _stop_guard(self) -> None:
        assert self.guard is not None
        self.guard.stop()

    def _stop_scheduler(self) -> None:
        scheduler, elector = self.scheduler, self.elector
        assert scheduler is not None and elector is not None
        scheduler.stop()  # ships the final journal segment while still leader
        if elector.is_leader():
            scheduler.shipper.stop()  # the lineage heads say the writer is gone

    def _stop_elector(self) -> None:
        assert self.elector is not None
        self.elector.stop()

    # ------------------------------------------------------------------ for the API

    def backups(self) -> BackupScheduler:
        """The running scheduler; without jobs, one made on first use (it runs only what the
        API asks: `POST /backups`)."""
        if self.scheduler is not None:
            return self.scheduler
        with self._lock:
            if self._api_scheduler is None:
                from memvault.backup.scheduler import BackupScheduler

                self._api_scheduler = BackupScheduler(self.memory.store, self.settings)
            return self._api_scheduler
