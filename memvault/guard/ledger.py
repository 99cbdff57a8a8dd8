"""The ledger: what the guarded store is and how much it held, kept with the backups.

It lives outside the database on purpose: a store that was emptied, replaced (new database,
new credentials) or rolled back cannot vouch for itself. Records are written as new files
(`ledger/<time>-<seq>.json`, never overwritten, the newest 20 kept) to every backup
destination; the newest readable record wins. Without any record, the newest valid backup's
manifest stands in for one, so losing the ledger files loses no protection.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from memvault.backup.catalog import list_backups
from memvault.backup.destinations import Destination, put_records, record_keys
from memvault.backup.errors import BackupError
from memvault.errors import MemvaultError

log = logging.getLogger("memvault.guard")

PREFIX = "ledger/"
KEEP = 20
RECENT_WINDOW = timedelta(hours=25)  # counts kept for MemoryCountDrop's 24h comparison


class LedgerUnavailable(MemvaultError):
    """No backup destination could be listed: what the store should be is unknown."""

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
    observed_at: str
    event: str = "observed"  # first-seen | observed | restored | adopted | from-backup
    note: str | None = None
    recent: list[tuple[str, int]] = field(default_factory=list)  # (time, total), last 25h
    host: str = field(default_factory=socket.gethostname)
    format: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["recent"] = [tuple(item) for item in known.get("recent", [])]
        return cls(**known)

    def peak_since(self, since: datetime) -> int:
        """The largest total observed at or after `since` (0 if none)."""
        totals = [total for at, total in self.recent if _parse(at) >= since]
        if _parse(self.observed_at) >= since:
            totals.append(self.memories)
        return max(totals, default=0)


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _key(record: LedgerRecord) -> str:
    stamp = _parse(record.observed_at).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{PREFIX}{stamp}-{record.seq:012d}.json"


def read_ledger(destinations: list[Destination]) -> tuple[LedgerRecord | None, list[str]]:
    """The newest ledger record over all destinations (or one built from the newest valid
    backup), and the problems met on the way (unreachable destination, unreadable record).
    Raises LedgerUnavailable when no destination can be listed at all."""
    where, problems = record_keys(destinations, PREFIX)
    if destinations and len(problems) == len(destinations):
        raise LedgerUnavailable(
            "the ledger cannot be read from any backup destination: " + "; ".join(problems),
            hint="check MEMVAULT_BACKUP_URLS (mounted? credentials?); until one answers, the "
            "guard cannot tell this store from a replaced one")
    newest: LedgerRecord | None = None
    for key in sorted(where, reverse=True):  # newest first; the first readable one wins
        for dest in where[key]:
            try:
                newest = LedgerRecord.from_json(json.loads(dest.read_bytes(key)))
                break
            except (MemvaultError, OSError, ValueError, TypeError, KeyError) as exc:
                problems.append(f"unreadable ledger record {key} in {dest.url}: {exc}")
        if newest is not None:
            break
    backup = _from_backups(destinations, problems)
    known = merge(newest, backup)
    return _journal_high_water(known, destinations, problems), problems


def _journal_high_water(record: LedgerRecord | None, destinations: list[Destination],
                        problems: list[str]) -> LedgerRecord | None:
    """Raise the seq to what the lineage's shipped journal proves (it ships every few
    seconds; the ledger is written at most every minute and not at all after a kill -9)."""
    from memvault.backup.journal import list_segments

    if record is None:
        return None
    shipped = record.seq
    for dest in destinations:
        try:
            shipped = max([shipped, *(r.upto_seq for r in list_segments(dest,
                                                                       record.lineage_id))])
        except (MemvaultError, OSError) as exc:
            problems.append(f"cannot list the journal in {dest.url}: {exc}")
    if shipped <= record.seq:
        return record
    return replace(record, seq=shipped,
                   note=f"journal shipped up to seq {shipped} after this record")


def merge(record: LedgerRecord | None, backup: LedgerRecord | None) -> LedgerRecord | None:
    """What the guard knows: the ledger record, unless a valid backup knows more. A backup of
    the same lineage at a later seq raises the high-water mark (the ledger is written at most
    every minute, a backup may be newer); one of another lineage taken after the record
    replaces it."""
    if record is None or backup is None:
        return record or backup
    if backup.lineage_id == record.lineage_id:
        if backup.seq <= record.seq:
            return record
        newer = _parse(backup.observed_at) > _parse(record.observed_at)
        return replace(record, seq=backup.seq,
                       memories=backup.memories if newer else record.memories,
                       namespaces=backup.namespaces if newer else record.namespaces,
                       observed_at=backup.observed_at if newer else record.observed_at,
                       note=f"high-water mark from backup {backup.note}")
    return backup if _parse(backup.observed_at) > _parse(record.observed_at) else record


def _from_backups(destinations: list[Destination], problems: list[str]) -> LedgerRecord | None:
    best = None
    for dest in destinations:
        try:
            entries = list_backups(dest)
        except BackupError as exc:
            problems.append(str(exc))
            continue
        for entry in entries:
            if entry.valid and entry.manifest and (
                    best is None or entry.manifest.created_at > best.created_at):
                best = entry.manifest
    if best is None:
        return None
    namespaces = dict(best.counts)
    return LedgerRecord(
        lineage_id=best.lineage_id, store_id=best.store_id, backend=best.backend, location="",
        active_embedder=best.active_embedder, seq=best.seq, memories=best.total,
        namespaces=namespaces, observed_at=best.created_at, event="from-backup",
        note=best.id)


def write_ledger(destinations: list[Destination], record: LedgerRecord) -> list[str]:
    """Write `record` to every destination and prune old records; the problems, if any (a
    destination that failed is logged and reported, the others are still written)."""
    return put_records(destinations, _key(record), json.dumps(record.to_json(), indent=1).encode(),
                       prefix=PREFIX, keep=KEEP, what="ledger")


def observe(previous: LedgerRecord | None, *, lineage_id: str, store_id: str, backend: str,
            location: str, active_embedder: str | None, seq: int, namespaces: dict[str, int],
            event: str = "observed", note: str | None = None,
            now: datetime | None = None) -> LedgerRecord:
    """A new record for the store as it is now, carrying the recent totals forward."""
    now = now or datetime.now(UTC)
    total = sum(namespaces.values())
    recent: list[tuple[str, int]] = []
    if previous is not None and previous.lineage_id == lineage_id:
        recent = [(at, n) for at, n in previous.recent if _parse(at) >= now - RECENT_WINDOW]
        recent.append((previous.observed_at, previous.memories))
        recent = [(at, n) for at, n in recent if _parse(at) >= now - RECENT_WINDOW][-50:]
        seq = max(seq, previous.seq) if event == "observed" else seq
    return LedgerRecord(lineage_id=lineage_id, store_id=store_id, backend=backend,
                        location=location, active_embedder=active_embedder, seq=seq,
                        memories=total, namespaces=dict(namespaces),
                        observed_at=now.isoformat(), event=event, note=note, recent=recent)
