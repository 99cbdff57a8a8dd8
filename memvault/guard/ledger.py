"""The ledger: what each guarded lineage is and how much it held, kept with the backups.

It lives outside the database on purpose: a store that was emptied, replaced (new database,
new credentials) or rolled back cannot vouch for itself. Records are written as new files
(`lineages/<lineage>/ledger/<seq>-<n><time>.json`, never overwritten, the newest 20 by seq
kept; see memvault/backup/records.py) to every backup destination; the readable record with the
highest seq wins, never the one with the latest clock. Without any record, the lineage's newest
(by seq) valid backup stands in for one, and the shipped journal and the lineage's head (read
by GET) raise the high-water mark, so losing the ledger files loses no protection. Format-1
records (`ledger/<time>-<seq>.json`) are still read.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from memvault.backup.catalog import BackupEntry, list_backups
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupError
from memvault.backup.head import read_head
from memvault.backup.layout import RecordKind, records_prefix
from memvault.backup.records import (
    lineage_record_keys,
    name_of,
    newest_first,
    next_record_key,
    put_records,
)
from memvault.errors import MemvaultError

log = logging.getLogger("memvault.guard")

KEEP = 20
RECENT_WINDOW = timedelta(hours=25)  # counts kept for MemoryCountDrop's 24h comparison
RESTORES_KEPT = 20


class LedgerUnavailable(MemvaultError):
    """No backup destination could be listed, or every listing hides what the destinations
    are known (by GET) to hold: what the store should be is unknown."""

    code = "ledger_unavailable"


@dataclass
class LedgerRecord:
    lineage_id: str
    store_id: str
    backend: str
    location: str
    active_embedder: str | None
    seq: int  # the highest journal seq seen in this lineage
    memories: int
    namespaces: dict[str, int]
    observed_at: str  # wall clock: for people and the 24 h count window, never for order
    event: str = "observed"  # first-seen | observed | restored | adopted | from-backup
    note: str | None = None
    recent: list[tuple[str, int]] = field(default_factory=list)  # (time, total), last 25h
    host: str = field(default_factory=socket.gethostname)
    restores: list[str] = field(default_factory=list)  # restore ids this lineage accepted
    format: int = 2
    # The writer's configuration fingerprint (config/fingerprint.py: secrets as hashes only),
    # so the next start can say what changed (guard/drift.py).
    config: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["recent"] = [tuple(item) for item in known.get("recent", [])]
        return cls(**known)

    @property
    def has_data(self) -> bool:
        return self.seq > 0 or self.memories > 0

    def peak_since(self, since: datetime) -> int:
        """The largest total observed at or after `since` (0 if none)."""
        totals = [total for at, total in self.recent if _parse(at) >= since]
        if _parse(self.observed_at) >= since:
            totals.append(self.memories)
        return max(totals, default=0)


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def restore_id(marker: dict[str, Any] | None) -> str | None:
    """The id of the restore a store's `restored_from` marker names (markers written before
    restores had ids are named by their backup and finish time)."""
    if not marker:
        return None
    if marker.get("restore_id"):
        return str(marker["restore_id"])
    return f"{marker.get('backup')}@{marker.get('finished_at')}"


def read_ledger(destinations: list[Destination], lineage_id: str | None = None, *,
                backups: dict[str, list[BackupEntry]] | None = None
                ) -> tuple[LedgerRecord | None, list[str]]:
    """What the destinations know of `lineage_id` (without one: of the lineage with the highest
    seq, for a destination that holds one lineage): the record with the highest seq, raised by
    the lineage's newest valid backup, shipped journal and head; and the problems met on the
    way. `backups` (destination url -> its backups) saves listing them again. Raises
    LedgerUnavailable when no destination can be listed at all."""
    where, problems = lineage_record_keys(destinations, RecordKind.LEDGER, lineage_id)
    if destinations and len(problems) == len(destinations):
        raise LedgerUnavailable(
            "the ledger cannot be read from any backup destination: " + "; ".join(problems),
            hint="check MEMVAULT_BACKUP_URLS (mounted? credentials?); until one answers, the "
            "guard cannot tell this store from a replaced one")
    best: tuple[LedgerRecord, str] | None = None
    for key in newest_first(where):
        for dest in where[key]:
            try:
                record = LedgerRecord.from_json(json.loads(dest.read_bytes(key)))
            except (MemvaultError, OSError, ValueError, TypeError, KeyError) as exc:
                problems.append(f"unreadable ledger record {key} in {dest.url}: {exc}")
                continue
            if (lineage_id is None or record.lineage_id == lineage_id) and (
                    best is None or _order(record, key) > _order(*best)):
                best = record, key
            break
        if best is not None and lineage_id is not None:
            break  # newest first: the first readable one of the lineage wins
    newest = best[0] if best else None
    lineage = lineage_id or (newest.lineage_id if newest else None)
    backup = _from_backups(destinations, lineage, problems, backups)
    known = merge(newest, backup)
    return _high_water(known, destinations, problems), problems


def _order(record: LedgerRecord, key: str) -> tuple[int, Any]:
    return record.seq, name_of(key)


def _high_water(record: LedgerRecord | None, destinations: list[Destination],
                problems: list[str]) -> LedgerRecord | None:
    """Raise the seq to what the lineage's shipped journal and head prove (the journal ships
    every few seconds; the ledger is written at most every minute and not at all after a
    kill -9)."""
    from memvault.backup.journal import list_segments

    if record is None:
        return None
    shipped = record.seq
    for dest in destinations:
        try:
            shipped = max([shipped, *(r.upto_seq for r in list_segments(dest,
                                                                       record.lineage_id))])
            head = read_head(dest, record.lineage_id)
            if head is not None:
                shipped = max(shipped, head.journal_upto)
        except (MemvaultError, OSError) as exc:
            problems.append(f"cannot read the journal of {record.lineage_id} in {dest.url}: "
                            f"{exc}")
    if shipped <= record.seq:
        return record
    return replace(record, seq=shipped,
                   note=f"journal shipped up to seq {shipped} after this record")


def merge(record: LedgerRecord | None, backup: LedgerRecord | None) -> LedgerRecord | None:
    """What the guard knows of a lineage: its ledger record, unless a valid backup of it
    reaches a higher seq (the ledger is written at most every minute, a backup may be newer):
    then the backup's counts, which are the later ones by seq. A backup of another lineage
    teaches nothing about this one."""
    if record is None or backup is None:
        return record or backup
    if backup.lineage_id != record.lineage_id or backup.seq <= record.seq:
        return record
    return replace(record, seq=backup.seq, memories=backup.memories,
                   namespaces=backup.namespaces, note=f"high-water mark from backup "
                   f"{backup.note}")


def _from_backups(destinations: list[Destination], lineage_id: str | None,
                  problems: list[str], listed: dict[str, list[BackupEntry]] | None
                  ) -> LedgerRecord | None:
    """A record standing in for the lineage's newest (by seq) valid backup."""
    best = None
    for dest in destinations:
        try:
            entries = listed[dest.url] if listed and dest.url in listed else list_backups(dest)
        except BackupError as exc:
            problems.append(str(exc))
            continue
        for entry in entries:
            m = entry.manifest
            if entry.valid and m and (lineage_id is None or m.lineage_id == lineage_id) and (
                    best is None or (m.seq, m.created_at) > (best.seq, best.created_at)):
                best = m
    if best is None:
        return None
    return LedgerRecord(
        lineage_id=best.lineage_id, store_id=best.store_id, backend=best.backend, location="",
        active_embedder=best.active_embedder, seq=best.seq, memories=best.total,
        namespaces=dict(best.counts), observed_at=best.created_at, event="from-backup",
        note=best.id)


def write_ledger(destinations: list[Destination], record: LedgerRecord) -> list[str]:
    """Write `record` to every destination under its lineage, named by its seq, and prune the
    lineage's old records; the problems, if any (a destination that failed is logged and
    reported, the others are still written)."""
    key = record_key_for(destinations, record)
    return put_records(destinations, key, json.dumps(record.to_json(), indent=1).encode(),
                       prefix=records_prefix(record.lineage_id, RecordKind.LEDGER), keep=KEEP,
                       what="ledger")


def record_key_for(destinations: list[Destination], record: LedgerRecord) -> str:
    stamp = _parse(record.observed_at).strftime("%Y%m%dT%H%M%S%fZ")
    return next_record_key(destinations, record.lineage_id, RecordKind.LEDGER, record.seq,
                           stamp)


def observe(previous: LedgerRecord | None, *, lineage_id: str, store_id: str, backend: str,
            location: str, active_embedder: str | None, seq: int, namespaces: dict[str, int],
            event: str = "observed", note: str | None = None, restored: str | None = None,
            now: datetime | None = None, config: dict[str, Any] | None = None
            ) -> LedgerRecord:
    """A new record for the store as it is now, carrying the recent totals and the accepted
    restores forward."""
    now = now or datetime.now(UTC)
    total = sum(namespaces.values())
    recent: list[tuple[str, int]] = []
    restores: list[str] = []
    if previous is not None and previous.lineage_id == lineage_id:
        # A total stamped ahead of this clock is carried as seen now: it ages out of the 24 h
        # window a day after the clock was corrected, not 400 days later.
        recent = [(min(at, now.isoformat(), key=_parse), n)
                  for at, n in [*previous.recent, (previous.observed_at, previous.memories)]]
        recent = [(at, n) for at, n in recent if _parse(at) >= now - RECENT_WINDOW][-50:]
        seq = max(seq, previous.seq) if event == "observed" else seq
        restores = list(previous.restores)
    if restored and restored not in restores:
        restores = [*restores, restored][-RESTORES_KEPT:]
    return LedgerRecord(lineage_id=lineage_id, store_id=store_id, backend=backend,
                        location=location, active_embedder=active_embedder, seq=seq,
                        memories=total, namespaces=dict(namespaces),
                        observed_at=now.isoformat(), event=event, note=note, recent=recent,
                        restores=restores, config=config)

