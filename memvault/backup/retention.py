"""Retention (last / daily / weekly / monthly) over valid backups only.

Suspicious backups never count towards a bucket, so they can never push a valid one out; the
newest valid backup is always kept; a policy that keeps nothing is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from memvault.backup.catalog import BackupEntry, list_backups
from memvault.backup.destinations import Destination
from memvault.backup.errors import RetentionRefused
from memvault.backup.format import INCOMPLETE, MANIFEST, SUSPICIOUS, snapshot_key
from memvault.backup.journal import list_segments

# An unfinished snapshot younger than this may still be being written.
INCOMPLETE_GRACE = timedelta(hours=1)
RULES = ("last", "daily", "weekly", "monthly")


@dataclass
class PrunePlan:
    destination: Destination
    keep: dict[str, list[str]] = field(default_factory=dict)  # id -> reasons
    delete: dict[str, str] = field(default_factory=dict)  # id -> why
    delete_keys: dict[str, list[str]] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"destination": self.destination.url,
                "keep": [{"id": k, "reasons": v} for k, v in self.keep.items()],
                "delete": [{"id": k, "reason": v} for k, v in self.delete.items()],
                "journal_segments_to_delete": len(self.segments)}


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


def plan_prune(dest: Destination, keep_policy: dict[str, int],
               now: datetime | None = None, entries: list[BackupEntry] | None = None
               ) -> PrunePlan:
    check_policy(keep_policy)
    now = now or datetime.now(UTC)
    entries = entries if entries is not None else list_backups(dest)
    plan = PrunePlan(dest)
    valid = sorted((e for e in entries if e.valid), key=lambda e: e.created_at, reverse=True)
    keep = plan.keep
    if valid:
        keep.setdefault(valid[0].id, []).append("newest valid backup")
    for index, entry in enumerate(valid[:keep_policy.get("last", 0)]):
        keep.setdefault(entry.id, []).append(f"last {index + 1}")
    _bucketed(valid, keep_policy.get("daily", 0), lambda d: d.date().isoformat(), "daily",
              keep)
    # Point-in-time recovery needs the journal from the oldest snapshot of the last/daily window.
    pitr_floor = {e.manifest.lineage_id: e.manifest.seq for e in valid
                  if e.id in keep and e.manifest}  # newest first: the oldest wins
    _bucketed(valid, keep_policy.get("weekly", 0),
              lambda d: "{}-W{:02d}".format(*d.isocalendar()[:2]), "weekly", keep)
    _bucketed(valid, keep_policy.get("monthly", 0), lambda d: f"{d:%Y-%m}", "monthly", keep)
    newest_valid_at = valid[0].created_at if valid else ""
    suspicious = sorted((e for e in entries if e.status == SUSPICIOUS),
                        key=lambda e: e.created_at, reverse=True)
    for index, entry in enumerate(suspicious):
        if index < max(keep_policy.get("last", 0), 1) or entry.created_at > newest_valid_at:
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
        plan.segments += [r.key for r in list_segments(dest, lineage_id) if r.upto_seq <= floor]
    return plan


def apply_prune(plan: PrunePlan) -> None:
    for keys in plan.delete_keys.values():
        plan.destination.delete(keys[:1])
        plan.destination.delete(keys[1:])
    if plan.segments:
        plan.destination.delete(plan.segments)


def _id_time(backup_id: str) -> datetime | None:
    with contextlib.suppress(ValueError):
        return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return None
