"""mem0's REST routes over the Memory service (sync handlers: FastAPI runs them in its
threadpool, so a slow store or embedder never blocks the event loop)."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

from memvault.config import public_settings
from memvault.errors import InvalidInput, NotFound
from memvault.memory import Memory, format_record
from memvault.server import schemas
from memvault.server.auth import Principal, authenticate, require_admin
from memvault.server.deps import Context, MemoryDep
from memvault.store import ENTITY_KEYS, MemoryRecord, parse_filters

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse, "description": "invalid input"},
    401: {"model": schemas.ErrorResponse, "description": "missing or unknown API key"},
    403: {"model": schemas.ErrorResponse, "description": "not allowed for this API key"},
    502: {"model": schemas.ErrorResponse, "description": "store, embedder or LLM failed"},
    503: {"model": schemas.ErrorResponse, "description": "store or embedder unavailable"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "no such memory (or not yours)"}}
MemoryId = uuid.UUID  # a malformed id is a 422 before any handler runs
# mem0's admin listing (GET /memories without ids) answers up to 1,000 memories by default.
ADMIN_PAGE = 1000


def visible(memory: Memory, principal: Principal, memory_id: str) -> MemoryRecord | None:
    """404 unless the memory exists (or existed, for history) inside the caller's scope.
    Returns the record when it exists."""
    record = memory.record(memory_id)
    if record is not None:
        if principal.can_see_record(record):
            return record
    elif principal.admin:
        return None  # the service itself answers 404 for an unknown id
    else:
        entries = memory.record_history(memory_id)
        if entries and principal.can_see(entries[-1].after or entries[-1].before or {}):
            return None
    raise NotFound(f"Memory with id {memory_id} not found")


@router.post("/memories", tags=["memories"], summary="Add memories",
             responses={200: {"model": schemas.AddResponse}, **ERRORS})
def add_memories(
    body: schemas.MemoryCreate,
    context: Context,
    principal: Principal = Depends(authenticate),
) -> JSONResponse:
    memory = context.runtime.memory
    ids = principal.entities(body.user_id, body.agent_id, body.run_id)
    messages = [m.model_dump() for m in body.messages]
    infer = body.infer is not False
    if infer and memory.settings.llm:
        result = memory.add(messages, **ids, metadata=body.metadata, infer=True,
                            expiration_date=body.expiration_date, memory_type=body.memory_type,
                            prompt=body.prompt, actor=principal.actor, timestamp=body.timestamp)
        return JSONResponse(result)
    records = memory.verbatim_records(messages, **ids, metadata=body.metadata,
                                      expiration_date=body.expiration_date,
                                      memory_type=body.memory_type, timestamp=body.timestamp)
    # Stored in one transaction with whatever other adds are waiting (memory/batching.py).
    added = {"results": context.runtime.add_batcher.submit(records, principal.actor)}
    return JSONResponse({**added, **memory.extraction_skipped()} if infer else added)


@router.get("/memories", tags=["memories"], summary="List memories of a namespace",
            responses={200: {"model": schemas.MemoryList}, **ERRORS})
def list_memories(
    memory: MemoryDep,
    user_id: str | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
    top_k: int | None = Query(None, ge=0, le=ADMIN_PAGE, description="default 20; the "
                              f"admin's listing without ids: {ADMIN_PAGE}, as mem0's"),
    show_expired: bool = False,
    filters: str | None = Query(None, description="memvault extension: mem0 filters as JSON"),
    principal: Principal = Depends(authenticate),
) -> JSONResponse:
    ids = principal.entities(user_id, agent_id, run_id)
    parsed = _json_filters(filters)
    principal.check_filters(parsed)
    if top_k == 0:
        return JSONResponse({"results": []})
    if all(v is None for v in ids.values()) and parsed is None:
        # mem0: a listing without ids is the admin's view of the whole store.
        if not principal.admin:
            raise HTTPException(403, "Admin role required.")
        records = memory.records(None, limit=ADMIN_PAGE if top_k is None else top_k,
                                 include_expired=show_expired)
        return JSONResponse({"results": [format_record(r) for r in records]})
    return JSONResponse(memory.get_all(**ids, filters=parsed,
                                       top_k=20 if top_k is None else top_k,
                                       show_expired=show_expired))


def _json_filters(filters: str | None) -> dict[str, Any] | None:
    if filters is None:
        return None
    try:
        parsed = json.loads(filters)
    except ValueError as exc:
        raise InvalidInput(f"filters is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidInput("filters must be a JSON object")
    return parsed


@router.get("/memories/{memory_id}", tags=["memories"], summary="Get a memory",
            responses={200: {"model": schemas.MemoryItem}, **NOT_FOUND, **ERRORS})
def get_memory(
    memory_id: MemoryId, memory: MemoryDep, principal: Principal = Depends(authenticate)
) -> JSONResponse:
    record = visible(memory, principal, str(memory_id))
    if record is None:
        raise NotFound(f"Memory with id {memory_id} not found")
    return JSONResponse(format_record(record, None, with_score=True))


@router.post("/search", tags=["memories"], summary="Search memories",
             responses={200: {"model": schemas.MemoryList}, **ERRORS})
def search_memories(
    body: schemas.SearchRequest, memory: MemoryDep, principal: Principal = Depends(authenticate)
) -> JSONResponse:
    ids = principal.entities(body.user_id, body.agent_id, body.run_id)
    principal.check_filters(body.filters)
    result = memory.search(body.query, **ids, filters=body.filters,
                           top_k=20 if body.top_k is None else body.top_k, limit=body.limit,
                           threshold=body.threshold,
                           rerank=bool(body.rerank), explain=bool(body.explain),
                           show_expired=bool(body.show_expired), search_mode=body.search_mode,
                           reference_date=body.reference_date)
    return JSONResponse(result)


@router.put("/memories/{memory_id}", tags=["memories"], summary="Update a memory",
            responses={200: {"model": schemas.MessageResponse}, **NOT_FOUND, **ERRORS})
def update_memory(
    memory_id: MemoryId,
    body: schemas.MemoryUpdate,
    memory: MemoryDep,
    principal: Principal = Depends(authenticate),
) -> JSONResponse:
    visible(memory, principal, str(memory_id))
    changes: dict[str, Any] = {"text": body.text, "data": body.data, "metadata": body.metadata}
    if "expiration_date" in body.model_fields_set:
        changes["expiration_date"] = body.expiration_date  # null clears it
    return JSONResponse(memory.update(str(memory_id), **changes, actor=principal.actor))


@router.get("/memories/{memory_id}/history", tags=["memories"], summary="A memory's history",
            responses={200: {"model": list[schemas.HistoryItem]}, **NOT_FOUND, **ERRORS})
def memory_history(
    memory_id: MemoryId, memory: MemoryDep, principal: Principal = Depends(authenticate)
) -> JSONResponse:
    visible(memory, principal, str(memory_id))
    history = memory.history(str(memory_id))
    if not history:
        raise NotFound(f"Memory with id {memory_id} not found")
    return JSONResponse(history)


@router.delete("/memories/{memory_id}", tags=["memories"], summary="Delete a memory",
               responses={200: {"model": schemas.MessageResponse}, **NOT_FOUND, **ERRORS})
def delete_memory(
    memory_id: MemoryId, memory: MemoryDep, principal: Principal = Depends(authenticate)
) -> JSONResponse:
    if visible(memory, principal, str(memory_id)) is None:
        raise NotFound(f"Memory with id {memory_id} not found")
    memory.delete(str(memory_id), actor=principal.actor)
    return JSONResponse({"message": "Memory deleted successfully"})


@router.delete("/memories", tags=["memories"], summary="Delete all memories of a namespace",
               responses={200: {"model": schemas.MessageResponse}, **ERRORS})
def delete_all_memories(
    memory: MemoryDep,
    user_id: str | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
    principal: Principal = Depends(authenticate),
) -> JSONResponse:
    # Never wider than the ids given (mem0 once wiped every user here); a scoped key's scope
    # is always part of the filter.
    if not principal.admin and all(v is None for v in (user_id, agent_id, run_id)):
        raise InvalidInput("give user_id, agent_id or run_id: delete_all never deletes "
                           "everything")
    ids = principal.entities(user_id, agent_id, run_id)
    memory.delete_all(**ids, actor=principal.actor)
    return JSONResponse({"message": "All relevant memories deleted"})


@router.post("/reset", tags=["admin"], summary="Delete every memory (journaled)",
             responses={200: {"model": schemas.MessageResponse}, **ERRORS})
def reset(memory: MemoryDep, principal: Principal = Depends(require_admin),
          safety_snapshot: bool = True) -> JSONResponse:
    memory.reset(actor=principal.actor, safety_snapshot=safety_snapshot)
    return JSONResponse({"message": "All memories reset"})


@router.get("/configure", tags=["admin"], summary="The configuration, secrets redacted",
            responses=ERRORS)
def configuration(context: Context, _: Principal = Depends(require_admin)) -> JSONResponse:
    # Redacted twice over: public_settings masks secret fields, the redactor any secret
    # value or URL credential that might sit in another field.
    redact = context.redact

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    settings = public_settings(context.settings)
    return JSONResponse({key: clean(value) for key, value in settings.items()})


@router.get("/entities", tags=["entities"], summary="Users, agents and runs with memories",
            responses={200: {"model": list[schemas.Entity]}, **ERRORS})
def list_entities(
    memory: MemoryDep, principal: Principal = Depends(authenticate)
) -> JSONResponse:
    if principal.admin:
        return JSONResponse(memory.entities())
    return JSONResponse(scoped_entities(memory, principal.scope))


def scoped_entities(memory: Memory, scope: dict[str, str]) -> list[dict[str, Any]]:
    """The entities among the memories a scoped key can see."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for record in memory.records(parse_filters(dict(scope))):
        for key in ENTITY_KEYS:
            value = getattr(record, key)
            if value is None:
                continue
            kind = key.removesuffix("_id")
            item = found.setdefault((kind, value), {
                "id": value, "type": kind, "total_memories": 0,
                "created_at": record.created_at, "updated_at": record.updated_at})
            item["total_memories"] += 1
            item["created_at"] = min(item["created_at"], record.created_at)
            item["updated_at"] = max(item["updated_at"], record.updated_at)
    order = {"user": 0, "agent": 1, "run": 2}
    return sorted(found.values(), key=lambda e: (order[e["type"]], e["id"]))


@router.delete("/entities/{entity_type}/{entity_id:path}", tags=["entities"],
               summary="Delete every memory of a user, agent or run",
               responses={200: {"model": schemas.MessageResponse}, **NOT_FOUND, **ERRORS})
def delete_entity(
    entity_type: Literal["user", "agent", "run"],
    entity_id: str,
    memory: MemoryDep,
    principal: Principal = Depends(require_admin),
) -> JSONResponse:
    key = f"{entity_type}_id"
    if not memory.get_all(**{key: entity_id}, top_k=1)["results"]:
        raise NotFound(f"Entity {entity_type} {entity_id} not found")
    memory.delete_all(**{key: entity_id}, actor=principal.actor)
    return JSONResponse({"message": "Entity deleted"})
