"""How old the newest valid backup is and what the leader's scheduler says about its runs:
BackupStale, BackupInvalid, JournalLag, BackupFailing (rules in guard/checks.py).

Ages never come from a stamp ahead of this clock: measured on the monotonic clock when this
process took the backup; else from the newest valid backup by seq; a future stamp (or no
backup at all) counts from this process's start, so a backup that never succeeds turns stale
1.5 intervals after startup.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from memvault.backup.catalog import list_backups
from memvault.backup.clock import SKEW_TOLERANCE_S
from memvault.backup.destinations import Destination
from memvault.errors import MemvaultError
from memvault.guard.checks import Finding, assess_backups
from memvault.guard.clock import Clock

if TYPE_CHECKING:
    from memvault.config import Settings

log = logging.getLogger("memvault.guard")


class BackupHealth:
    def __init__(self, settings: Settings, destinations: list[Destination], clock: Clock) -> None:
        self.settings = settings
        self.destinations = destinations
        self.clock = clock
        self.started = clock.mono()
        self.newest: tuple[int, str, str] | None = None  # (seq, created_at, id), by seq
        self.newest_valid_at: float | None = None  # now minus the age, for the digest

    def refresh(self, lineage_id: str) -> None:
        """The lineage's newest valid backup by seq (a destination that cannot be listed is
        logged; the others still count)."""
        newest = None
        for dest in self.destinations:
            try:
                for entry in list_backups(dest):
                    m = entry.manifest
                    if entry.valid and m and m.lineage_id == lineage_id and (
                            newest is None or (m.seq, m.created_at) > newest[:2]):
                        newest = (m.seq, m.created_at, m.id)
            except MemvaultError as exc:
                log.error("cannot list backups in %s: %s", dest, exc)
        self.newest = newest

    def age(self, last_valid_mono: float | None) -> float:
        mono = self.clock.mono()
        if last_valid_mono is not None:
            return mono - last_valid_mono
        since_start = mono - self.started
        if self.newest is None:
            return since_start
        try:
            created = datetime.fromisoformat(self.newest[1])
        except ValueError:
            return since_start
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        age = (self.clock.wall() - created).total_seconds()
        return since_start if age < -SKEW_TOLERANCE_S else max(0.0, age)

    def findings(self, scheduler: Any) -> list[Finding]:
        now = self.clock.wall().timestamp()
        self.newest_valid_at = now - self.age(scheduler.last_valid_mono)
        return assess_backups(now, self.newest_valid_at, scheduler.last_results,
                              scheduler.shipper.lag_seconds(), self.settings.backup_interval,
                              self.settings.journal_interval, failing=scheduler.failing)
