"""Scheduled jobs for `serve`: snapshots every MEMVAULT_BACKUP_INTERVAL and journal shipping
every MEMVAULT_JOURNAL_INTERVAL, in background threads, only while `is_leader()` (on
PostgreSQL several replicas share one store and only the leader runs jobs)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from memvault.backup.catalog import list_backups, newest_valid
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.retention import apply_prune, plan_prune
from memvault.backup.shipper import JournalShipper
from memvault.backup.snapshot import BackupResult, create_backup
from memvault.errors import MemvaultError

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.store import Store

log = logging.getLogger("memvault.backup.scheduler")

# Another concern (the guard) may hold the scheduled jobs of a store, by id(store): a function
# that returns why not to back up or ship now (a replaced or emptied store must not be backed
# up over the good backups, nor ship journal into the lineage it is not), or None.
HOLDS: dict[int, Callable[[], str | None]] = {}


class BackupScheduler:
    """`start()` from the app's startup, `stop()` from its shutdown (ships a final segment)."""

    def __init__(self, store: Store, settings: Settings, *,
                 is_leader: Callable[[], bool] = lambda: True,
                 destinations: list[Destination] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.is_leader = is_leader
        self.destinations = destinations if destinations is not None \
            else open_destinations(settings)
        self.shipper = JournalShipper(store, settings, self.destinations)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._snapshot_lock = threading.Lock()
        self.last_results: list[BackupResult] = []
        self.last_snapshot_at: float | None = None
        self.last_error: str | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for name, target in (("memvault-snapshots", self._snapshot_loop),
                             ("memvault-journal", self._journal_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loops and ship a final journal segment (clean shutdown loses nothing)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self.is_leader():
            self.ship_journal()

    # ---------------------------------------------------------------- jobs

    def snapshot_now(self, accept_drop: bool = False) -> list[BackupResult]:
        with self._snapshot_lock:
            results = create_backup(self.store, self.settings, destinations=self.destinations,
                                    accept_drop=accept_drop)
            self.last_results = results
            self.last_snapshot_at = time.time()
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
                log.error("pruning %s failed: %s", dest, exc)

    def ship_journal(self) -> int:
        try:
            return self.shipper.ship()
        except MemvaultError as exc:  # e.g. the store itself is unreachable
            log.error("journal shipping failed: %s", exc)
            self.shipper.last_error = str(exc)
            return 0

    def seconds_until_snapshot(self) -> float:
        """Due now if no destination holds a valid snapshot of this store that is recent."""
        try:
            store_id = self.store.meta().store_id
            newest = 0.0
            for dest in self.destinations:
                entry = newest_valid([e for e in list_backups(dest)
                                      if e.manifest and e.manifest.store_id == store_id])
                if entry is None or entry.created is None:
                    return 0.0
                stamp = entry.created.timestamp()
                newest = stamp if not newest else min(newest, stamp)
        except MemvaultError as exc:
            log.error("cannot list backups: %s", exc)
            return 0.0
        return max(0.0, newest + self.settings.backup_interval - time.time())

    def held(self) -> str | None:
        hold = HOLDS.get(id(self.store))
        reason = hold() if hold is not None else None
        if reason:
            self.last_error = f"held: {reason}"
        return reason

    def _snapshot_loop(self) -> None:
        wait = self._first_wait()
        while not self._stop.wait(wait):
            wait = self.settings.backup_interval
            if not self.is_leader():
                continue
            reason = self.held()
            if reason:
                log.warning("scheduled snapshot held: %s", reason)
                wait = min(wait, 30.0)  # taken as soon as the hold lifts
                continue
            try:
                results = self.snapshot_now()
                self.prune()
                self.last_error = None
                if any(r.status == "failed" for r in results):
                    wait = min(wait, 300.0)  # a failed run is retried soon, not in 24 h
            except Exception as exc:  # a job thread must never die silently
                log.exception("scheduled snapshot failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
                wait = min(wait, 300.0)

    def _first_wait(self) -> float:
        if not self.is_leader():
            return self.settings.backup_interval
        return self.seconds_until_snapshot()

    def _journal_loop(self) -> None:
        while not self._stop.wait(self.settings.journal_interval):
            if self.is_leader() and not self.held():
                try:
                    self.ship_journal()
                except Exception:
                    log.exception("journal shipping crashed")

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        last = (datetime.fromtimestamp(self.last_snapshot_at, UTC).isoformat()
                if self.last_snapshot_at else None)
        return {
            "running": bool(self._threads),
            "leader": self.is_leader(),
            "destinations": [d.url for d in self.destinations],
            "last_snapshot_at": last,
            "last_results": [r.to_json() for r in self.last_results],
            "last_error": self.last_error,
            "journal": {"last_shipped_at": self.shipper.last_shipped_at,
                        "last_error": self.shipper.last_error},
        }
