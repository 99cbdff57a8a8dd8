"""What the console's first page shows, read from what exists: the status report (the same JSON as
`GET /status`), the guard's firing alerts with their hints, counts per namespace, the backups in
each destination, journal shipping and the newest drill. Nothing here scans the memories: the
counts come from the store's count query, the backup listing is kept until a snapshot is taken
or BACKUP_LISTING_SECONDS pass."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from memvault.backup.catalog import list_backups
from memvault.backup.errors import BackupError
from memvault.backup.scheduler import BackupScheduler
from memvault.config import redact_url
from memvault.guard.alerts import ALERTS
from memvault.guard.checks import REFUSING, Finding, Verdict
from memvault.runtime import Runtime

BACKUP_LISTING_SECONDS = 30.0
BACKUPS_SHOWN = 5  # per destination, newest first
NAMESPACES_SHOWN = 50  # the largest ones; the rest are counted


def ago(stamp: str | None, now: datetime | None = None) -> str:
    """'5 min ago' for an ISO stamp ('never' without one)."""
    if not stamp:
        return "never"
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    then = then if then.tzinfo else then.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - then).total_seconds()
    if seconds < 0:
        return f"{stamp} (in the future: check this host's clock)"
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def size_text(size: int | None) -> str:
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


@dataclass(frozen=True)
class AlertView:
    alert: str
    severity: str
    summary: str
    hint: str
    refusing: bool  # the memory routes answer 503 while it fires


def firing_alerts(verdict: Verdict | None) -> list[AlertView]:
    if verdict is None:
        return []
    refusing = verdict.refusing_data()
    return [AlertView(f.alert.value, ALERTS.get(f.alert, "warning"), f.summary,
                      _hint(f), f in refusing) for f in verdict.firing()]


def _hint(finding: Finding) -> str:
    return str(finding.details.get("hint") or "")


def headline(report: dict[str, Any], alerts: list[AlertView], verdict: Verdict | None) -> str:
    """One word a person reads first: refused, not ready, warning, ok, unknown."""
    if any(a.refusing for a in alerts):
        return "refused"
    if verdict is not None and any(f.alert in REFUSING for f in verdict.firing()):
        return "not ready"
    return {"OK": "ok", "WARNING": "warning", "CRITICAL": "critical"}.get(
        report.get("status", ""), "unknown")


@dataclass(frozen=True)
class BackupRow:
    id: str
    status: str
    created_at: str | None
    age: str
    size: str
    memories: int | None
    reasons: list[str]


@dataclass(frozen=True)
class DestinationView:
    url: str
    backups: list[BackupRow]
    valid: int
    total: int
    error: str | None = None


@dataclass
class BackupListing:
    """The destinations' listings, kept BACKUP_LISTING_SECONDS or until the scheduler takes a
    snapshot (so a page view does not list a remote bucket each time)."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _key: tuple[Any, ...] | None = None
    _at: float = 0.0
    _views: list[DestinationView] = field(default_factory=list)

    def views(self, scheduler: BackupScheduler, redact: Any) -> list[DestinationView]:
        key = (scheduler.last_snapshot_at, tuple(d.url for d in scheduler.destinations))
        with self._lock:
            if key == self._key and time.monotonic() - self._at < BACKUP_LISTING_SECONDS:
                return self._views
            views = [_destination(dest, redact) for dest in scheduler.destinations]
            self._key, self._at, self._views = key, time.monotonic(), views
            return views


def _destination(dest: Any, redact: Any) -> DestinationView:
    url = redact(redact_url(dest.url))
    try:
        entries = list_backups(dest)
    except BackupError as exc:
        return DestinationView(url, [], 0, 0, error=redact(exc.message))
    newest = sorted(entries, key=lambda e: e.order(), reverse=True)
    rows = []
    for entry in newest[:BACKUPS_SHOWN]:
        summary = entry.summary()
        rows.append(BackupRow(entry.id, entry.status, summary["created_at"],
                              ago(summary["created_at"]), size_text(summary["size"]),
                              summary["total"], [redact(str(r)) for r in summary["reasons"]]))
    return DestinationView(url, rows, sum(1 for e in entries if e.valid), len(entries))


def journal_view(scheduler: BackupScheduler) -> dict[str, Any]:
    status = scheduler.status()["journal"]
    return {"lag": duration(scheduler.shipper.lag_seconds()),
            "last_shipped": ago(status.get("last_shipped_at")),
            "error": status.get("last_error")}


def drill_view(runtime: Runtime) -> dict[str, Any] | None:
    if runtime.drill is None:
        return None
    status = runtime.drill.status()
    newest = status.get("newest") or {}
    return {"ok": newest.get("ok") if newest else None,
            "finished": ago(newest.get("finished_at")) if newest else "never",
            "total": newest.get("total"), "reason": newest.get("reason"),
            "hint": newest.get("hint"), "error": newest.get("error"),
            "due_in": duration(float(status.get("due_in_s") or 0))}
