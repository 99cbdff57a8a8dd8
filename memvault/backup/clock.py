"""Wall-clock stamps of backup artifacts: ages across restarts, and stamps from the future.

Order never follows these stamps (the highest seq is the newest); they are for people, for
`restore --at` and for ages that must survive a restart. A stamp later than this process's
clock is a finding (a clock ran ahead when it was written, or this one is behind), named with
both times so a person can tell which clock is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from memvault.backup import metrics
from memvault.backup.catalog import list_backups, newest_valid
from memvault.backup.crypto import Cipher
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupCorrupt, EncryptionKeyError
from memvault.backup.format import MANIFEST, snapshot_key
from memvault.backup.head import read_head
from memvault.backup.journal import list_segments, read_segment
from memvault.backup.presence import list_lineages
from memvault.errors import MemvaultError

log = logging.getLogger("memvault.backup")

# Clocks of two healthy hosts differ by far less; more is not a rounding matter.
SKEW_TOLERANCE_S = 300.0


def utc_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ClockSkewFinding:
    destination: str
    artifact: str  # the key whose stamp is ahead
    what: str  # which stamp ("manifest created_at", "head written_at", ...)
    stamped: datetime
    now: datetime

    @property
    def ahead_seconds(self) -> float:
        return (self.stamped - self.now).total_seconds()

    def message(self) -> str:
        return (f"{self.artifact} in {self.destination}: {self.what} is {self.stamped.isoformat()}"
                f", {self.ahead_seconds:.0f} s ahead of this clock ({self.now.isoformat()})")

    def stamp(self) -> tuple[str, str]:
        """(what, ISO time), the shape the guard's ClockSkew check takes."""
        return (f"{self.artifact} ({self.what}) in {self.destination}", self.stamped.isoformat())


def _parse(stamp: object) -> datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def clock_skew_findings(destinations: list[Destination], cipher: Cipher | None = None, *,
                        clock: Callable[[], datetime] = utc_clock,
                        tolerance_s: float = SKEW_TOLERANCE_S) -> list[ClockSkewFinding]:
    """Every manifest, lineage head and newest journal segment (per lineage) whose wall-clock
    stamp lies more than `tolerance_s` ahead of `clock()`. Sets
    memvault_backup_clock_skew_seconds per destination. A destination that cannot be read is
    logged and skipped (its own alerts say so)."""
    now = clock()
    findings: list[ClockSkewFinding] = []
    for dest in destinations:
        try:
            found = _dest_findings(dest, cipher, now, tolerance_s)
        except MemvaultError as exc:
            log.warning("cannot check the clock stamps of %s: %s", dest, exc)
            continue
        metrics.clock_skew.labels(dest.url).set(max((f.ahead_seconds for f in found),
                                                    default=0.0))
        for finding in found:
            log.error("clock skew: %s", finding.message())
        findings += found
    return findings


def _dest_findings(dest: Destination, cipher: Cipher | None, now: datetime, tolerance_s: float
                   ) -> list[ClockSkewFinding]:
    stamps: list[tuple[str, str, object]] = []
    for entry in list_backups(dest):
        if entry.manifest:
            key = snapshot_key(entry.folder, MANIFEST)
            stamps.append((key, "manifest created_at", entry.manifest.created_at))
            stamps.append((key, "manifest completed_at", entry.manifest.completed_at))
    for lineage_id in list_lineages(dest, strict=False).lineages:
        head = read_head(dest, lineage_id)
        if head is not None:
            stamps.append((f"lineages/{lineage_id}/head.json", "head written_at",
                           head.written_at))
        refs = list_segments(dest, lineage_id)
        if refs:
            try:
                segment = read_segment(dest, refs[-1], cipher)
            except (BackupCorrupt, EncryptionKeyError) as exc:  # verify reports these
                log.warning("cannot read %s for its clock stamps: %s", refs[-1].key, exc)
                continue
            stamps.append((refs[-1].key, "segment created_at", segment.header.get("created_at")))
            stamps.append((refs[-1].key, "last entry ts", segment.header.get("last_ts")))
    found = []
    for key, what, raw in stamps:
        at = _parse(raw)
        if at is not None and (at - now).total_seconds() > tolerance_s:
            found.append(ClockSkewFinding(dest.url, key, what, at, now))
    return found


def seed_backup_metrics(destinations: list[Destination], *,
                        clock: Callable[[], datetime] = utc_clock) -> None:
    """At startup: memvault_backup_last_success_timestamp_seconds{destination} from the newest
    valid backup BY SEQ (instead of absent until this process backs up), and
    memvault_backup_last_memories from it. A stamp in the future counts as now (the age is at
    least 0 and grows from here; the ClockSkew finding says why)."""
    now = clock()
    newest_total: tuple[int, int] | None = None
    for dest in destinations:
        try:
            newest = newest_valid(list_backups(dest))
        except MemvaultError as exc:
            log.warning("cannot read %s to seed the backup age: %s", dest, exc)
            continue
        if newest is None or newest.manifest is None:
            continue
        at = _parse(newest.manifest.completed_at) or _parse(newest.manifest.created_at) or now
        metrics.backup_last_success.labels(dest.url).set(min(at, now).timestamp())
        if newest_total is None or newest.seq > newest_total[0]:
            newest_total = (newest.seq, newest.manifest.total)
    if newest_total is not None:
        metrics.backup_last_memories.set(newest_total[1])
