"""`GET|POST /backups` for the HTTP server: include `router` and set
`app.state.backup_scheduler` to the running BackupScheduler (auth is the server's)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from memvault.backup.catalog import list_backups
from memvault.backup.errors import BackupError
from memvault.backup.scheduler import BackupScheduler

router = APIRouter(tags=["backups"])


def _scheduler(request: Request) -> BackupScheduler:
    scheduler = getattr(request.app.state, "backup_scheduler", None)
    if scheduler is None:
        raise HTTPException(503, detail={"code": "backups_not_configured",
                                         "message": "backups are not running in this server"})
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
