"""Retention (last / daily / weekly / monthly) over valid backups only, per lineage.

"Newest" and "last N" mean the highest journal seqs, never the latest clocks: a snapshot
stamped in the future (a clock that ran ahead) cannot push the real newest one out, and the
point-in-time journal floor follows seq too. Daily/weekly/monthly group by the wall-clock
stamp, which only decides which older backups are kept in addition. Suspicious backups never
count towards a bucket; the newest valid backup of each lineage is always kept; a policy that
keeps nothing is refused. A delete the destination refuses is reported key by key.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from memvault.backup import metrics
from memvault.backup.catalog import BackupEntry, list_backups
from memvault.backup.destinations import DeletesRefused, Destination
from memvault.backup.errors import DestinationError, RetentionRefused
from memvault.backup.format import INCOMPLETE, MANIFEST, SUSPICIOUS, snapshot_key
from memvault.backup.head import write_journal_floor
from memvault.backup.journal import list_segments

log = logging.getLogger("memvault.backup")

# An unfinished snapshot younger than this may still be being written.
INCOMPLETE_GRACE = timedelta(hours=1)
RULES = ("last", "daily", "weekly", "monthly")
SAFETY_PREFIX = "pre-"  # the tag of a safety snapshot: pre-<operation>


@dataclass
class PrunePlan:
    destination: Destination
    keep: dict[str, list[str]] = field(default_factory=dict)  # id -> reasons
    delete: dict[str, str] = field(default_factory=dict)  # id -> why
    delete_keys: dict[str, list[str]] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    # Per lineage, the highest seq of the journal segments this plan deletes.
    journal_floors: dict[str, int] = field(default_factory=dict)
    # Filled by apply_prune: each key the destination did not delete, with its reason.
    not_deleted: dict[str, str] = field(default_factory=dict)
    applied: bool = False

    def deleted_ids(self) -> list[str]:
        """Backups whose every key is gone (only after apply_prune)."""
        if not self.applied:
            return []
        return [i for i, keys in self.delete_keys.items()
                if not any(k in self.not_deleted for k in keys)]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "destination": self.destination.url,
            "keep": [{"id": k, "reasons": v} for k, v in self.keep.items()],
            "delete": [{"id": k, "reason": v} for k, v in self.delete.items()],
            "journal_segments_to_delete": len(self.segments)}
        if self.applied:
            out["deleted"] = self.deleted_ids()
            out["not_deleted"] = [{"key": k, "reason": v} for k, v in self.not_deleted.items()]
        return out


def check_policy(keep: dict[str, int]) -> None:
    unknown = set(keep) - set(RULES)
    if unknown:
        raise RetentionRefused(f"unknown retention rule(s) {sorted(unknown)}",
                               hint="MEMVAULT_BACKUP_KEEP takes last, daily, weekly, monthly")
    if not any(keep.get(rule, 0) > 0 for rule in RULES):
        raise RetentionRefused("the retention policy keeps no backups at all",
                               hint="set MEMVAULT_BACKUP_KEEP to keep at least one, e.g. last=7")


def _bucketed(valid: list[BackupEntry], count: int, bucket: Callable[[datetime], Any],
              label: str, keep: dict[str, list[str]]) -> None:
    seen: list[Any] = []
    for entry in valid:  # newest first
        assert entry.created is not None
        key = bucket(entry.created.astimezone(UTC))
        if key in seen:
            continue
        if len(seen) >= count:
            break
        seen.append(key)
        keep.setdefault(entry.id, []).append(f"{label} {key}")


def _safety(valid: list[BackupEntry], keep_policy: dict[str, int], now: datetime,
            keep: dict[str, list[str]]) -> None:
    """A safety snapshot (`pre-<operation>`, backup/safety.py) is the way back from a
    destructive step: it is kept for the daily window (at least a day) whatever `last` says,
    so a burst of them cannot push out, nor be pushed out by, the regular backups."""
    days = max(keep_policy.get("daily", 0), 1)
    for entry in valid:
        tag = entry.manifest.tag if entry.manifest else None
        if tag and tag.startswith(SAFETY_PREFIX) and entry.created is not None \
                and now - entry.created.astimezone(UTC) < timedelta(days=days):
            keep.setdefault(entry.id, []).append(f"safety snapshot {tag}, kept {days} day(s)")


def _lineage(entry: BackupEntry) -> str:
    return entry.manifest.lineage_id if entry.manifest else ""


def plan_prune(dest: Destination, keep_policy: dict[str, int],
               now: datetime | None = None, entries: list[BackupEntry] | None = None
               ) -> PrunePlan:
    check_policy(keep_policy)
    now = now or datetime.now(UTC)
    entries = entries if entries is not None else list_backups(dest)
    plan = PrunePlan(dest)
    keep = plan.keep
    pitr_floor: dict[str, int] = {}
    for lineage_id in sorted({_lineage(e) for e in entries if e.valid}):
        valid = sorted((e for e in entries if e.valid and _lineage(e) == lineage_id),
                       key=BackupEntry.order, reverse=True)
        keep.setdefault(valid[0].id, []).append("newest valid backup")
        for index, entry in enumerate(valid[:keep_policy.get("last", 0)]):
            keep.setdefault(entry.id, []).append(f"last {index + 1}")
        _bucketed(valid, keep_policy.get("daily", 0), lambda d: d.date().isoformat(), "daily",
                  keep)
        _safety(valid, keep_policy, now, keep)
        # Point-in-time recovery needs the journal from the lowest seq of the last/daily
        # window (whatever the clocks said when those snapshots were taken).
        pitr_floor[lineage_id] = min(e.seq for e in valid if e.id in keep)
        _bucketed(valid, keep_policy.get("weekly", 0),
                  lambda d: "{}-W{:02d}".format(*d.isocalendar()[:2]), "weekly", keep)
        _bucketed(valid, keep_policy.get("monthly", 0), lambda d: f"{d:%Y-%m}", "monthly",
                  keep)
    newest_valid_seq = {lin: max(e.seq for e in entries if e.valid and _lineage(e) == lin)
                        for lin in pitr_floor}
    suspicious = sorted((e for e in entries if e.status == SUSPICIOUS),
                        key=BackupEntry.order, reverse=True)
    for index, entry in enumerate(suspicious):
        if index < max(keep_policy.get("last", 0), 1) or \
                entry.seq > newest_valid_seq.get(_lineage(entry), -1):
            keep.setdefault(entry.id, []).append("suspicious, kept for inspection")
    for entry in entries:
        if entry.id in keep:
            continue
        if entry.status == INCOMPLETE:
            started = _id_time(entry.id)
            if started is not None and now - started < INCOMPLETE_GRACE:
                keep.setdefault(entry.id, []).append("unfinished, may still be in progress")
                continue
            plan.delete[entry.id] = "unfinished backup (no manifest)"
        elif entry.valid:
            plan.delete[entry.id] = "valid, outside every retention rule"
        elif entry.status == SUSPICIOUS:
            plan.delete[entry.id] = "suspicious, older than the newest valid backup"
        else:
            keep.setdefault(entry.id, []).append(f"{entry.status}: left for inspection")
            continue
        # The manifest goes first: a half-deleted backup then reads as unfinished, never valid.
        manifest_key = snapshot_key(entry.folder, MANIFEST)
        plan.delete_keys[entry.id] = sorted(entry.keys, key=lambda k: k != manifest_key)
    for lineage_id, floor in pitr_floor.items():
        pruned = [r for r in list_segments(dest, lineage_id) if r.upto_seq <= floor]
        plan.segments += [r.key for r in pruned]
        if pruned:
            plan.journal_floors[lineage_id] = max(r.upto_seq for r in pruned)
    return plan


def apply_prune(plan: PrunePlan) -> None:
    """Delete what the plan says. Every key the destination refuses is recorded in
    `plan.not_deleted`, logged and counted; a backup whose manifest could not be deleted keeps
    its data files (a manifest without its data would read as a backup). Raises DeletesRefused
    at the end when anything was refused (everything else was still attempted)."""
    dest = plan.destination
    plan.applied = True
    for keys in plan.delete_keys.values():
        if _delete(dest, keys[:1], plan):
            _delete(dest, keys[1:], plan)
    if plan.segments:
        for lineage_id, floor in plan.journal_floors.items():
            write_journal_floor(dest, lineage_id, floor, "MEMVAULT_BACKUP_KEEP")
        _delete(dest, plan.segments, plan)
    if plan.not_deleted:
        raise DeletesRefused(dest.url, plan.not_deleted)


def _delete(dest: Destination, keys: list[str], plan: PrunePlan) -> bool:
    if not keys:
        return True
    try:
        dest.delete(keys)
    except DeletesRefused as exc:
        refused = exc.not_deleted
    except DestinationError as exc:  # nothing is known to be deleted
        refused = dict.fromkeys(keys, str(exc))
    else:
        return True
    for key, why in refused.items():
        log.error("prune: %s in %s was NOT deleted: %s", key, dest, why)
    metrics.objects_not_deleted.labels(dest.url).inc(len(refused))
    plan.not_deleted.update(refused)
    return False


def _id_time(backup_id: str) -> datetime | None:
    with contextlib.suppress(ValueError):
        return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return None
