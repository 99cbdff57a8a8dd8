"""The memory browser: pick a namespace, list or search it, open a memory with its history from
the journal, edit its text, delete it after a confirmation page. Every read and change goes
through `Memory` with the REST rules (`routes.visible`, `Principal.entities`): a scoped key
sees and changes only its own namespace, and a memory outside it is "not found". While the
guard refuses the store every page here answers 503 and says why, as the REST routes do."""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from memvault.errors import MemvaultError, NotFound
from memvault.memory import format_record
from memvault.server.console.namespaces import entity_ids, visible_counts
from memvault.server.console.web import Console, Viewer, read_form, redirect
from memvault.server.errors import error_body, request_id
from memvault.server.locations import LocationHider
from memvault.server.routes import visible
from memvault.store import ENTITY_KEYS, namespace_key

log = logging.getLogger("memvault.server")

SHOWN = 50  # memories listed or found per page
PICKER = 200  # namespaces offered in the picker (largest first)


def _namespace_of(item: dict[str, Any]) -> str:
    return namespace_key(*(item.get(k) for k in ENTITY_KEYS))


def browser_router(console: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    memory = console.runtime.memory

    async def run(request: Request, viewer: Viewer, work: Any, *args: Any
                  ) -> HTMLResponse | RedirectResponse:
        """`work(viewer, *args)` in the threadpool, unless the store is refused; API errors
        become an error page with the API's status and hint."""
        refused = console.refused()
        if refused:
            return console.refused_page(request, viewer, refused)
        try:
            result = await run_in_threadpool(work, viewer, *args)
        except MemvaultError as exc:
            status, body = error_body(exc, console.redact, request_id(request))
            detail = str(body["detail"])
            if status >= 500:
                log.error("%s %s -> %d: %s", request.method, request.url.path, status, detail)
                if not viewer.principal.admin:
                    detail = LocationHider(console.runtime.settings)(detail)
            return console.error_page(request, viewer, status, detail)
        except HTTPException as exc:
            return console.error_page(request, viewer, exc.status_code, str(exc.detail))
        if isinstance(result, RedirectResponse):
            return result
        name, context = result
        return console.page(request, viewer, name, context)

    def listing(viewer: Viewer, namespace: str, query: str) -> tuple[str, dict[str, Any]]:
        principal = viewer.principal
        shown = visible_counts(memory.store.counts(), principal)
        picker = shown[:PICKER]
        if namespace and namespace not in {n.key for n in picker}:
            picker += [n for n in shown if n.key == namespace]
        ids = principal.entities(*(entity_ids(namespace) if namespace else
                                   dict.fromkeys(ENTITY_KEYS)).values())
        if query:
            found = memory.search(query, **ids, top_k=SHOWN)["results"]
        elif principal.admin and not namespace:
            found = [format_record(r) for r in memory.records(None, limit=SHOWN)]
        else:
            found = memory.get_all(**ids, top_k=SHOWN)["results"]
        for item in found:
            item["namespace"] = _namespace_of(item)
        return "memories.html", {"picker": picker, "namespace": namespace,
                                 "query": query, "results": found}

    @router.get("/ui/memories")
    async def memories(request: Request, namespace: str = "", q: str = "",
                       viewer: Viewer = Depends(console.viewer)) -> Response:
        return await run(request, viewer, listing, namespace.strip(), q.strip())

    def detail(viewer: Viewer, memory_id: str) -> tuple[str, dict[str, Any]]:
        record = visible(memory, viewer.principal, memory_id)
        history = memory.history(memory_id)
        if record is None and not history:
            raise NotFound(f"Memory with id {memory_id} not found")
        item = format_record(record) if record is not None else None
        if item is not None:
            item["namespace"] = _namespace_of(item)
        return "memory.html", {"memory_id": memory_id, "item": item,
                               "history": list(reversed(history))}

    @router.get("/ui/memories/{memory_id}")
    async def show(request: Request, memory_id: uuid.UUID,
                   viewer: Viewer = Depends(console.viewer)) -> Response:
        return await run(request, viewer, detail, str(memory_id))

    def edit(viewer: Viewer, memory_id: str, text: str) -> RedirectResponse:
        if visible(memory, viewer.principal, memory_id) is None:
            raise NotFound(f"Memory with id {memory_id} not found")
        memory.update(memory_id, text=text, actor=viewer.principal.actor)
        return redirect(f"/ui/memories/{memory_id}?saved=1")

    @router.post("/ui/memories/{memory_id}/edit")
    async def save(request: Request, memory_id: uuid.UUID,
                   viewer: Viewer = Depends(console.viewer)) -> Response:
        try:
            form = await read_form(request, viewer.session)
        except HTTPException as exc:
            return console.error_page(request, viewer, exc.status_code, str(exc.detail))
        return await run(request, viewer, edit, str(memory_id), form.get("text", ""))

    def confirm(viewer: Viewer, memory_id: str) -> tuple[str, dict[str, Any]]:
        record = visible(memory, viewer.principal, memory_id)
        if record is None:
            raise NotFound(f"Memory with id {memory_id} not found")
        item = format_record(record)
        item["namespace"] = _namespace_of(item)
        return "delete.html", {"item": item}

    @router.get("/ui/memories/{memory_id}/delete")
    async def ask(request: Request, memory_id: uuid.UUID,
                  viewer: Viewer = Depends(console.viewer)) -> Response:
        return await run(request, viewer, confirm, str(memory_id))

    def remove(viewer: Viewer, memory_id: str) -> RedirectResponse:
        record = visible(memory, viewer.principal, memory_id)
        if record is None:
            raise NotFound(f"Memory with id {memory_id} not found")
        memory.delete(memory_id, actor=viewer.principal.actor)
        namespace = namespace_key(*(getattr(record, k) for k in ENTITY_KEYS))
        return redirect(f"/ui/memories?namespace={quote(namespace, safe='')}&deleted=1")

    @router.post("/ui/memories/{memory_id}/delete")
    async def delete(request: Request, memory_id: uuid.UUID,
                     viewer: Viewer = Depends(console.viewer)) -> Response:
        try:
            await read_form(request, viewer.session)
        except HTTPException as exc:
            return console.error_page(request, viewer, exc.status_code, str(exc.detail))
        return await run(request, viewer, remove, str(memory_id))

    return router
