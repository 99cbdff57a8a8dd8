"""The backup concern's server extension (see memvault/server/extensions.py):

- `router`: `GET|POST /backups` (mounted behind the admin key by the server);
- `install(app)`: backup metrics on the app's registry, a readiness check that refuses a store
  left half-restored;
- `background_jobs(settings, memory)`: the BackupScheduler (snapshots + journal shipping), run
  only by the elected leader on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from memvault.backup import metrics
from memvault.backup.catalog import list_backups
from memvault.backup.clock import seed_backup_metrics
from memvault.backup.errors import BackupError
from memvault.backup.restore import restore_incomplete
from memvault.backup.scheduler import BackupScheduler
from memvault.errors import MemvaultError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from memvault.config import Settings
    from memvault.memory import Memory

log = logging.getLogger("memvault.backup")
router = APIRouter(tags=["backups"])
# The scheduler started for a store by background_jobs, so the API reports the running one.
_RUNNING: dict[int, BackupScheduler] = {}


def _scheduler(request: Request) -> BackupScheduler:
    state = request.app.state
    scheduler = getattr(state, "backup_scheduler", None)
    if scheduler is None:
        memory = state.memory
        scheduler = _RUNNING.get(id(memory.store)) or BackupScheduler(memory.store,
                                                                     state.settings)
        state.backup_scheduler = scheduler
    return scheduler


@router.get("/backups")
async def get_backups(request: Request) -> dict[str, Any]:
    """Every backup in every destination (oldest first) and the scheduler's state."""
    scheduler = _scheduler(request)

    def collect() -> dict[str, Any]:
        backups, errors = [], []
        for dest in scheduler.destinations:
            try:
                backups += [e.summary() for e in list_backups(dest)]
            except BackupError as exc:
                errors.append({"destination": dest.url, "error": exc.message})
        return {"backups": backups, "errors": errors, "scheduler": scheduler.status()}

    result = await run_in_threadpool(collect)
    if result["errors"]:
        raise HTTPException(502, detail={"code": "backup_destination_unavailable", **result})
    return result


@router.post("/backups")
async def post_backups(request: Request, accept_drop: bool = False) -> dict[str, Any]:
    """Take a snapshot now; 200 when every destination holds a valid copy, else 502 with why."""
    scheduler = _scheduler(request)
    results = await run_in_threadpool(scheduler.snapshot_now, accept_drop)
    body = {"results": [r.to_json() for r in results]}
    if not results or any(r.status != "valid" for r in results):
        raise HTTPException(502, detail={"code": "backup_failed", **body})
    return body


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


def install(app: FastAPI) -> None:
    app.state.readiness_checks.append(restore_check)
    registry = getattr(app.state, "metrics_registry", None)
    if registry is not None:
        for metric in (metrics.backup_last_success, metrics.backup_last_memories,
                       metrics.backup_runs, metrics.journal_lag, metrics.journal_segments,
                       metrics.objects_not_deleted, metrics.clock_skew):
            # ValueError: already registered (several apps in one process)
            with contextlib.suppress(ValueError):
                registry.register(metric)


class BackupJob:
    """Leader election + scheduler as one background job."""

    def __init__(self, settings: Settings, memory: Memory) -> None:
        from memvault.store.leader import make_leader_elector

        self.elector = make_leader_elector(settings, "backups")
        self.scheduler = BackupScheduler(memory.store, settings,
                                         is_leader=self.elector.is_leader)
        self._key = id(memory.store)

    def start(self) -> None:
        self.elector.start()
        _RUNNING[self._key] = self.scheduler
        # Ages survive a restart: the last-success gauge comes from the newest valid backup by
        # seq, read in the background (a slow or dead destination must not delay startup).
        threading.Thread(target=seed_backup_metrics, args=(self.scheduler.destinations,),
                         name="memvault-backup-ages", daemon=True).start()
        self.scheduler.start()

    def stop(self) -> None:
        try:
            self.scheduler.stop()  # ships the final journal segment while still leader
            if self.elector.is_leader():
                self.scheduler.shipper.stop()  # the lineage heads say the writer is gone
        finally:
            _RUNNING.pop(self._key, None)
            self.elector.stop()


def background_jobs(settings: Settings, memory: Memory) -> list[BackupJob]:
    return [BackupJob(settings, memory)]
