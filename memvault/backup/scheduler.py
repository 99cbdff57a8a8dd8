"""Scheduled jobs for `serve`: snapshots every MEMVAULT_BACKUP_INTERVAL and journal shipping
every MEMVAULT_JOURNAL_INTERVAL, in background threads, only while `is_leader()` (on
PostgreSQL several replicas share one store and only the leader runs jobs).

When the next snapshot is due follows this lineage's newest valid snapshot by seq, and time
within the process is monotonic: a snapshot stamped by a clock that ran ahead is "due now"
(with ClockSkew from the guard), never "due in 400 days". A run that fails (a destination
failed, or the run raised) is kept as `failing` until the next run succeeds everywhere: the
guard fires BackupFailing on the first failure."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from memvault.backup.catalog import list_backups
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.retention import apply_prune, plan_prune
from memvault.backup.shipper import JournalShipper
from memvault.backup.snapshot import BackupResult, create_backup
from memvault.errors import MemvaultError
from memvault.periodic import Periodic

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.store import Store

log = logging.getLogger("memvault.backup.scheduler")
AHEAD_TOLERANCE_S = 300.0
HELD_RETRY_S = 30.0  # a held snapshot is taken this soon after the hold lifts
FAILED_RETRY_S = 300.0  # a failed run is retried this soon, not in a day


def _never_held() -> str | None:
    return None


class BackupScheduler:
    """`start()` from the app's startup, `stop()` from its shutdown (ships a final segment).

    `hold()` says why no scheduled job may run now (the guard's: a replaced or emptied store
    must not be backed up over the good backups, nor ship journal into the lineage it is not),
    or None."""

    def __init__(self, store: Store, settings: Settings, *,
                 is_leader: Callable[[], bool] = lambda: True,
                 hold: Callable[[], str | None] = _never_held,
                 destinations: list[Destination] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.is_leader = is_leader
        self.hold = hold
        self.destinations = destinations if destinations is not None \
            else open_destinations(settings)
        self.shipper = JournalShipper(store, settings, self.destinations)
        self._loops = (
            Periodic("memvault-snapshots", self._scheduled_snapshot,
                     lambda: self.settings.backup_interval, first_wait=self._first_wait),
            Periodic("memvault-journal", self._scheduled_journal,
                     lambda: self.settings.journal_interval))
        self._snapshot_lock = threading.Lock()
        self.last_results: list[BackupResult] = []
        self.last_snapshot_at: float | None = None  # wall clock, for people
        self.last_valid_mono: float | None = None  # when this process last backed up validly
        self.last_error: str | None = None
        self.failing: str | None = None  # why the last run failed, until one succeeds

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        """Stop the loops and ship a final journal segment (clean shutdown loses nothing)."""
        for loop in self._loops:
            loop.stop()
        if self.is_leader():
            self.ship_journal()

    # ---------------------------------------------------------------- jobs

    def snapshot_now(self, accept_drop: bool = False, tag: str | None = None
                     ) -> list[BackupResult]:
        with self._snapshot_lock:
            try:
                results = create_backup(self.store, self.settings,
                                        destinations=self.destinations,
                                        accept_drop=accept_drop, shipper=self.shipper, tag=tag)
            except Exception as exc:
                self.failing = f"{type(exc).__name__}: {exc}"
                raise
            self.last_results = results
            self.last_snapshot_at = time.time()
            failed = [r for r in results if r.status == "failed"]
            if failed or not results:
                self.failing = "; ".join(f"{r.destination}: {', '.join(r.reasons) or 'failed'}"
                                         for r in failed) or "no destination configured"
            else:
                self.failing = None
            if results and all(r.status == "valid" for r in results):
                self.last_valid_mono = time.monotonic()
            return results

    def prune(self) -> None:
        """Apply MEMVAULT_BACKUP_KEEP to every destination (never the newest valid backup)."""
        for dest in self.destinations:
            try:
                plan = plan_prune(dest, self.settings.backup_keep)
                apply_prune(plan)
                if plan.delete:
                    log.info("pruned %d backups from %s: %s", len(plan.delete), dest,
                             ", ".join(plan.delete))
            except MemvaultError as exc:
                # Retention that cannot delete is a failing backup job (BackupFailing): the
                # destination fills up, and nothing else would say so.
                log.error("pruning %s failed: %s", dest, exc)
                self.failing = f"prune of {dest.url}: {exc}"

    def ship_journal(self) -> int:
        try:
            return self.shipper.ship()
        except MemvaultError as exc:  # e.g. the store itself is unreachable
            log.error("journal shipping failed: %s", exc)
            self.shipper.last_error = str(exc)
            return 0

    def seconds_until_snapshot(self) -> float:
        """Due now if a destination holds no valid snapshot of this store, or its newest (by
        seq) is older than the interval, or is stamped ahead of this clock (its age is
        unknown: taking one now costs one snapshot; waiting on it could cost 400 days)."""
        if self.last_valid_mono is not None:
            elapsed = time.monotonic() - self.last_valid_mono
            return max(0.0, self.settings.backup_interval - elapsed)
        try:
            store_id = self.store.meta().store_id
            oldest_newest = None
            now = time.time()
            for dest in self.destinations:
                newest: tuple[int, float, str] | None = None  # (seq, stamp, id)
                for e in list_backups(dest):
                    if e.valid and e.manifest and e.manifest.store_id == store_id and e.created:
                        candidate = (e.manifest.seq, e.created.timestamp(), e.id)
                        newest = candidate if newest is None else max(newest, candidate)
                if newest is None:
                    return 0.0
                stamp = newest[1]
                if stamp > now + AHEAD_TOLERANCE_S:
                    log.warning("the newest backup %s in %s is stamped ahead of this clock: a "
                                "snapshot is due now", newest[2], dest)
                    return 0.0
                oldest_newest = stamp if oldest_newest is None else min(oldest_newest, stamp)
        except MemvaultError as exc:
            log.error("cannot list backups: %s", exc)
            return 0.0
        if oldest_newest is None:
            return 0.0
        return max(0.0, oldest_newest + self.settings.backup_interval - now)

    def held(self) -> str | None:
        reason = self.hold()
        if reason:
            self.last_error = f"held: {reason}"
        return reason

    def _scheduled_snapshot(self) -> float | None:
        if not self.is_leader():
            return None
        reason = self.held()
        if reason:
            log.warning("scheduled snapshot held: %s", reason)
            return min(self.settings.backup_interval, HELD_RETRY_S)
        try:
            self.snapshot_now()
            self.prune()
            self.last_error = None
            if self.failing:
                log.error("scheduled snapshot failed: %s", self.failing)
                return min(self.settings.backup_interval, FAILED_RETRY_S)
        except Exception as exc:  # logged and surfaced as BackupFailing by the guard
            log.exception("scheduled snapshot failed")
            self.last_error = self.failing = f"{type(exc).__name__}: {exc}"
            return min(self.settings.backup_interval, FAILED_RETRY_S)
        return None

    def _first_wait(self) -> float:
        if not self.is_leader():
            return self.settings.backup_interval
        return self.seconds_until_snapshot()

    def _scheduled_journal(self) -> None:
        if self.is_leader() and not self.held():
            self.ship_journal()

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        last = (datetime.fromtimestamp(self.last_snapshot_at, UTC).isoformat()
                if self.last_snapshot_at else None)
        return {
            "running": any(loop.running for loop in self._loops),
            "leader": self.is_leader(),
            "destinations": [d.url for d in self.destinations],
            "last_snapshot_at": last,
            "last_results": [r.to_json() for r in self.last_results],
            "last_error": self.last_error,
            "failing": self.failing,
            "journal": {"last_shipped_at": self.shipper.last_shipped_at,
                        "last_error": self.shipper.last_error},
        }
