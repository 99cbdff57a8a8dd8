"""The console's overview page and sign-in / sign-out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from memvault.errors import MemvaultError
from memvault.guard.status import status_report
from memvault.server.auth import authenticate
from memvault.server.console import chart
from memvault.server.console.namespaces import NamespaceCount, visible_counts
from memvault.server.console.overview import (
    NAMESPACES_SHOWN,
    drill_view,
    firing_alerts,
    headline,
    journal_view,
)
from memvault.server.console.session import clear_cookie, set_cookie
from memvault.server.console.web import Console, Viewer, read_form, redirect, safe_next

log = logging.getLogger("memvault.server")


def overview_router(console: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    runtime = console.runtime

    def gather(viewer: Viewer) -> dict[str, Any]:
        principal = viewer.principal
        report = status_report(runtime.memory, runtime.guard)
        counts: dict[str, int] = (report.get("memories") or {}).get("namespaces") or {}
        namespaces = visible_counts(counts, principal)
        store_id = (report.get("store") or {}).get("store_id") or ""
        seen = None if principal.admin else {n.key for n in namespaces}
        history_error = None
        try:
            series = console.history.series(store_id, counts, seen)
        except MemvaultError as exc:
            log.error("the console could not read the journal: %s", exc)
            series, history_error = None, console.redact(str(exc))
        now_at = datetime.now(UTC).isoformat()[:19]
        context: dict[str, Any] = {
            "namespaces": namespaces[:NAMESPACES_SHOWN],
            "more_namespaces": _more(namespaces),
            "total": sum(n.count for n in namespaces),
            "chart": chart.render(series, now_at) if series is not None else None,
            "drop": chart.drop_text(series) if series is not None else None,
            "history_error": history_error,
        }
        if not principal.admin:
            return context  # the operator's view (GET /status, /backups) is the admin's
        guard = runtime.guard
        verdict = guard.verdict if guard is not None else None
        alerts = firing_alerts(verdict)
        scheduler = runtime.backups()
        context.update({
            "report": report, "alerts": alerts, "headline": headline(report, alerts, verdict),
            "guard_running": guard is not None and verdict is not None,
            "checked_at": guard.checked_at if guard is not None else None,
            "destinations": console.backups.views(scheduler, console.redact),
            "journal": journal_view(scheduler), "drill": drill_view(runtime),
        })
        return context

    @router.get("/ui")
    async def overview(request: Request,
                       viewer: Viewer = Depends(console.viewer)) -> HTMLResponse:
        context = await run_in_threadpool(gather, viewer)
        return console.page(request, viewer, "overview.html", context)

    @router.get("/ui/signin")
    async def signin_form(request: Request, next: str = "/ui") -> HTMLResponse:
        return console.page(request, None, "signin.html",
                            {"next": safe_next(next), "error": None})

    @router.post("/ui/signin")
    async def signin(request: Request) -> Response:
        session = console.sessions.of(request)
        try:
            form = await read_form(request, session)
        except HTTPException as exc:
            return console.error_page(request, None, exc.status_code, str(exc.detail))
        key = form.get("api_key", "").strip()
        target = safe_next(form.get("next"))
        try:
            if not key:
                raise HTTPException(401, "Enter an API key.")
            await authenticate(request, api_key=key, bearer=None)
        except HTTPException as exc:
            if exc.status_code != 401:
                raise
            return console.page(request, None, "signin.html",
                                {"next": target, "error": str(exc.detail)}, status=401)
        if session is not None:
            console.sessions.drop(session.id)  # a new id once signed in (no fixation)
        fresh = console.sessions.create(key)
        response = redirect(target)
        set_cookie(response, request, fresh)
        return response

    @router.post("/ui/signout")
    async def signout(request: Request) -> Response:
        session = console.sessions.of(request)
        try:
            await read_form(request, session)
        except HTTPException as exc:
            return console.error_page(request, None, exc.status_code, str(exc.detail))
        if session is not None:
            console.sessions.drop(session.id)
        response = redirect("/ui/signin" if console.admin_key_set else "/ui")
        clear_cookie(response, request)
        return response

    return router


def _more(namespaces: list[NamespaceCount]) -> dict[str, int] | None:
    rest = namespaces[NAMESPACES_SHOWN:]
    return {"namespaces": len(rest), "memories": sum(n.count for n in rest)} if rest else None
