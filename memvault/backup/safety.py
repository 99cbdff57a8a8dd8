"""Safety snapshots: a validated backup of the store taken right before memvault itself deletes
or rewrites memories (restore over a non-empty store, adopt, a re-embed switch, reset, a
delete_all wider than one namespace), so the way back is one `memvault restore`.

A safety snapshot is an ordinary backup (`create_backup`: staged, shipped, read back in full,
judged) whose manifest carries the tag `pre-<operation>`; retention keeps it for at least the
daily window (backup/retention.py). It is taken with `accept_drop`: it records the store as it
is, whatever it held before. When it cannot be taken valid everywhere, the operation is
refused (SafetySnapshotFailed) before anything changed, unless the caller opted out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from memvault.backup import metrics
from memvault.backup.format import all_valid, not_valid
from memvault.backup.snapshot import BackupResult, create_backup
from memvault.errors import MemvaultError, SafetySnapshotFailed

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.store import Store

log = logging.getLogger("memvault.backup.safety")
TAG_PREFIX = "pre-"

# Takes a snapshot tagged with its argument: `create_backup` by default, the running
# scheduler's `snapshot_now` in the server (one shipper, one snapshot at a time).
TakeSnapshot = Callable[[str], list[BackupResult]]


class Operation(StrEnum):
    """The destructive operations a safety snapshot precedes (the tag is `pre-<value>`)."""

    RESTORE = "restore"
    ADOPT = "adopt"
    REEMBED = "reembed"
    RESET = "reset"
    DELETE_ALL = "delete_all"


@dataclass(frozen=True)
class SafetySnapshot:
    operation: Operation
    backup_id: str
    seq: int
    memories: int
    created_at: str
    destinations: list[str]

    @property
    def tag(self) -> str:
        return TAG_PREFIX + self.operation

    def undo(self) -> str:
        """The one command that brings the store back to this snapshot. `--at` stops the
        journal replay at the snapshot, before the operation's own deletes."""
        return f"memvault restore {self.backup_id} --at {self.created_at} --yes"

    def describe(self) -> str:
        return (f"safety snapshot {self.backup_id} ({self.tag}: {self.memories} memories at "
                f"seq {self.seq}, valid in {', '.join(self.destinations)}); to undo: "
                f"`{self.undo()}`")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.backup_id, "tag": self.tag, "seq": self.seq,
                "memories": self.memories, "created_at": self.created_at,
                "destinations": self.destinations, "undo": self.undo()}


class SafetySnapshots:
    """The collaborator every destructive operation asks first: `before(operation)`."""

    def __init__(self, store: Store, settings: Settings, take: TakeSnapshot | None = None
                 ) -> None:
        self._store = store
        self._settings = settings
        self._take = take or self._create

    def _create(self, tag: str) -> list[BackupResult]:
        return create_backup(self._store, self._settings, accept_drop=True, tag=tag)

    def before(self, operation: Operation, *, enabled: bool = True) -> SafetySnapshot | None:
        """Snapshot the store before `operation`; None when it holds nothing (nothing to lose)
        or when the caller opted out (`enabled=False`, logged). Raises SafetySnapshotFailed,
        naming each destination's reason, when the snapshot is not valid everywhere."""
        if not enabled:
            log.warning("%s runs WITHOUT a safety snapshot (--no-safety-snapshot)", operation)
            metrics.safety_snapshots.labels(operation, "skipped").inc()
            return None
        if self._store.total() == 0:
            return None
        tag = TAG_PREFIX + operation
        try:
            results = self._take(tag)
        except Exception as exc:  # any failure refuses: the operation has not started
            reasons = [str(exc) if isinstance(exc, MemvaultError)
                       else f"{type(exc).__name__}: {exc}"]
        else:
            reasons = [f"{r.destination}: {r.status} ({'; '.join(r.reasons) or 'no reason'})"
                       for r in not_valid(results)] if results else ["no backup destination"]
            if all_valid(results):
                return self._taken(operation, results)
        metrics.safety_snapshots.labels(operation, "failed").inc()
        log.error("%s refused: the safety snapshot failed: %s", operation, "; ".join(reasons))
        raise SafetySnapshotFailed(
            f"{operation} refused, nothing was changed: the safety snapshot that would make it "
            f"reversible could not be taken: {'; '.join(reasons)}",
            hint="fix the backup destination named above (MEMVAULT_BACKUP_URLS: writable? "
            "reachable? full?) and retry; to go ahead without a way back, pass "
            "--no-safety-snapshot (CLI), safety_snapshot=False (Python) or "
            "?safety_snapshot=false (POST /reset)")

    def _taken(self, operation: Operation, results: list[BackupResult]) -> SafetySnapshot:
        manifest = results[0].manifest
        assert manifest is not None
        snapshot = SafetySnapshot(operation, manifest.id, manifest.seq, manifest.total,
                                  manifest.created_at, [r.destination for r in results])
        metrics.safety_snapshots.labels(operation, "taken").inc()
        log.info("before %s: %s", operation, snapshot.describe())
        return snapshot
