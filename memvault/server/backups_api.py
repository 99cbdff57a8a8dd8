"""The backups as the server sees them: `GET|POST /backups` (mounted behind the admin key by
the server, over the scheduler its runtime built), the backup metrics for the app's registry,
and a readiness check that refuses a store left half-restored. The scheduler itself is built
and started by memvault/runtime.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool

from memvault.backup import metrics
from memvault.backup.catalog import list_backups
from memvault.backup.errors import BackupError
from memvault.backup.restore import restore_incomplete
from memvault.backup.scheduler import BackupScheduler
from memvault.errors import MemvaultError

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from memvault.memory import Memory

# The process-wide backup metrics (updated by snapshots and journal shipping wherever they run).
METRICS: tuple[Collector, ...] = (
    metrics.backup_last_success, metrics.backup_last_memories, metrics.backup_runs,
    metrics.journal_lag, metrics.journal_segments, metrics.objects_not_deleted,
    metrics.clock_skew, metrics.safety_snapshots)


def backup_router(scheduler: Callable[[], BackupScheduler]) -> APIRouter:
    """The routes over `scheduler()`: the running scheduler, so the API reports its state."""
    router = APIRouter(tags=["backups"])

    @router.get("/backups")
    async def get_backups() -> dict[str, Any]:
        """Every backup in every destination (oldest first) and the scheduler's state."""
        running = scheduler()

        def collect() -> dict[str, Any]:
            backups, errors = [], []
            for dest in running.destinations:
                try:
                    backups += [e.summary() for e in list_backups(dest)]
                except BackupError as exc:
                    errors.append({"destination": dest.url, "error": exc.message})
            return {"backups": backups, "errors": errors, "scheduler": running.status()}

        result = await run_in_threadpool(collect)
        if result["errors"]:
            raise HTTPException(502, detail={"code": "backup_destination_unavailable",
                                             **result})
        return result

    @router.post("/backups")
    async def post_backups(accept_drop: bool = False) -> dict[str, Any]:
        """Take a snapshot now; 200 when every destination holds a valid copy, else 502 with
        why."""
        results = await run_in_threadpool(scheduler().snapshot_now, accept_drop)
        body = {"results": [r.to_json() for r in results]}
        if not results or any(r.status != "valid" for r in results):
            raise HTTPException(502, detail={"code": "backup_failed", **body})
        return body

    return router


def restore_check(memory: Memory) -> dict[str, Any]:
    try:
        marker = restore_incomplete(memory.store)
    except MemvaultError as exc:
        return {"name": "restore", "ok": False, "message": str(exc)}
    if marker:
        return {"name": "restore", "ok": False, "code": "restore_incomplete",
                "message": f"an unfinished restore of backup {marker.get('backup')} (started "
                f"{marker.get('started_at')}) left the store partial; re-run `memvault restore`"}
    return {"name": "restore", "ok": True, "message": "no unfinished restore"}
