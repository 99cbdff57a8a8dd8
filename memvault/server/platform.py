"""mem0's *platform* API subset, so mem0's own client library (`mem0ai.MemoryClient` and
`AsyncMemoryClient` with `host=`) works against memvault. Same Memory, same key rules as the
REST routes: a scoped key's scope fills or refuses every entity id, filters included."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from memvault.errors import InvalidInput, NotFound
from memvault.memory import Memory, format_record
from memvault.server.auth import Principal, authenticate
from memvault.server.deps import MemoryDep
from memvault.server.routes import MemoryId, scoped_entities, visible
from memvault.store import ENTITY_KEYS

router = APIRouter(tags=["mem0 platform"])
MAX_PAGE_SIZE = 1000


class AddBody(BaseModel):
    messages: list[dict[str, Any]]
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] | None = None
    infer: bool | None = None
    expiration_date: str | None = None
    timestamp: int | float | str | None = None  # the memories' created_at (memory/temporal.py)


class SearchBody(BaseModel):
    query: str
    filters: dict[str, Any] | None = None
    top_k: int | None = Field(None, ge=1, le=MAX_PAGE_SIZE)
    threshold: float | None = None
    show_expired: bool | None = None
    reference_date: int | float | str | None = None  # search as of then (memory/temporal.py)


class ListBody(BaseModel):
    filters: dict[str, Any] | None = None


class UpdateBody(BaseModel):
    text: str | None = None
    metadata: dict[str, Any] | None = None


class BatchItem(BaseModel):
    memory_id: MemoryId
    text: str | None = None
    metadata: dict[str, Any] | None = None


class BatchBody(BaseModel):
    memories: list[BatchItem] = Field(max_length=MAX_PAGE_SIZE)


def _split(principal: Principal, filters: dict[str, Any] | None
           ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The entity ids among the filters (the platform client sends ids only there) and the
    rest; the caller's scope fills or refuses the ids."""
    rest = dict(filters or {})
    principal.check_filters(rest)
    # A wildcard ("*": any user, as mem0 accepts) stays a filter; the scope still applies.
    given = {k: rest.pop(k) for k in ENTITY_KEYS
             if isinstance(rest.get(k), str) and rest[k] != "*"}
    ids = principal.entities(*(given.get(k) for k in ENTITY_KEYS))
    if all(v is None for v in ids.values()) and not rest:
        raise InvalidInput("give filters with user_id, agent_id or run_id")
    return ids, rest or None


@router.get("/v1/ping/", summary="mem0 client handshake")
def ping(principal: Principal = Depends(authenticate)) -> JSONResponse:
    # memvault has no organisations or projects, but mem0's client refuses to start without
    # both ids: one fixed pair, used for nothing.
    return JSONResponse({"status": "ok", "org_id": "memvault", "project_id": "default",
                         "user_email": None})


@router.post("/v3/memories/add/", summary="Add memories (mem0 platform)")
def add(body: AddBody, memory: MemoryDep,
        principal: Principal = Depends(authenticate)) -> JSONResponse:
    ids = principal.entities(body.user_id, body.agent_id, body.run_id)
    if all(v is None for v in ids.values()):
        raise InvalidInput("give user_id, agent_id or run_id")
    return JSONResponse(memory.add(body.messages, **ids, metadata=body.metadata,
                                   infer=body.infer is not False,
                                   expiration_date=body.expiration_date,
                                   timestamp=body.timestamp, actor=principal.actor))


@router.post("/v3/memories/search/", summary="Search memories (mem0 platform)")
def search(body: SearchBody, memory: MemoryDep,
           principal: Principal = Depends(authenticate)) -> JSONResponse:
    ids, rest = _split(principal, body.filters)
    return JSONResponse(memory.search(body.query, **ids, filters=rest, top_k=body.top_k or 10,
                                      threshold=body.threshold,
                                      show_expired=bool(body.show_expired),
                                      reference_date=body.reference_date))


@router.post("/v3/memories/", summary="List memories (mem0 platform, paginated)")
def list_memories(memory: MemoryDep, body: ListBody | None = None,
                  page: int = Query(1, ge=1), page_size: int = Query(100, ge=1,
                                                                     le=MAX_PAGE_SIZE),
                  principal: Principal = Depends(authenticate)) -> JSONResponse:
    ids, rest = _split(principal, body.filters if body else None)
    wanted = page * page_size
    if wanted > MAX_PAGE_SIZE:
        # The store lists newest first with a limit and no offset: deeper pages cost a scan.
        raise InvalidInput(f"pages reach the first {MAX_PAGE_SIZE} memories of a filter "
                           f"(page * page_size <= {MAX_PAGE_SIZE}), got {wanted}",
                           hint="narrow the filters (a run_id, a created_at range), or read "
                           "everything with `memvault export`")
    found = memory.get_all(**ids, filters=rest,
                           top_k=min(wanted + 1, MAX_PAGE_SIZE))["results"]
    return JSONResponse({"count": len(found), "next": None if len(found) <= wanted else
                         f"?page={page + 1}&page_size={page_size}",
                         "previous": None if page == 1 else
                         f"?page={page - 1}&page_size={page_size}",
                         "results": found[wanted - page_size:wanted]})


def _record(memory: Memory, principal: Principal, memory_id: str) -> Any:
    record = visible(memory, principal, memory_id)
    if record is None:
        raise NotFound(f"Memory with id {memory_id} not found")
    return record


@router.get("/v1/memories/{memory_id}/", summary="Get a memory (mem0 platform)")
def get(memory_id: MemoryId, memory: MemoryDep,
        principal: Principal = Depends(authenticate)) -> JSONResponse:
    return JSONResponse(format_record(_record(memory, principal, str(memory_id))))


@router.put("/v1/memories/{memory_id}/", summary="Update a memory (mem0 platform)")
def update(memory_id: MemoryId, body: UpdateBody, memory: MemoryDep,
           principal: Principal = Depends(authenticate)) -> JSONResponse:
    _record(memory, principal, str(memory_id))
    memory.update(str(memory_id), text=body.text, metadata=body.metadata,
                  actor=principal.actor)
    return JSONResponse(format_record(_record(memory, principal, str(memory_id))))


@router.delete("/v1/memories/{memory_id}/", summary="Delete a memory (mem0 platform)")
def delete(memory_id: MemoryId, memory: MemoryDep,
           principal: Principal = Depends(authenticate)) -> JSONResponse:
    _record(memory, principal, str(memory_id))
    return JSONResponse(memory.delete(str(memory_id), actor=principal.actor))


@router.get("/v1/memories/{memory_id}/history/", summary="A memory's history (mem0 platform)")
def history(memory_id: MemoryId, memory: MemoryDep,
            principal: Principal = Depends(authenticate)) -> JSONResponse:
    visible(memory, principal, str(memory_id))
    found = memory.history(str(memory_id))
    if not found:
        raise NotFound(f"Memory with id {memory_id} not found")
    return JSONResponse(found)


@router.delete("/v1/memories/", summary="Delete all memories of a namespace (mem0 platform)")
def delete_all(memory: MemoryDep, user_id: str | None = None, agent_id: str | None = None,
               run_id: str | None = None,
               principal: Principal = Depends(authenticate)) -> JSONResponse:
    # Never wider than the ids given, for the admin too: mem0's client sends none to mean
    # "everything", which memvault refuses (POST /reset is the journaled way).
    if all(v is None for v in (user_id, agent_id, run_id)):
        raise InvalidInput("give user_id, agent_id or run_id: delete_all never deletes "
                           "everything")
    ids = principal.entities(user_id, agent_id, run_id)
    memory.delete_all(**ids, actor=principal.actor)
    return JSONResponse({"message": "Memories deleted successfully!"})


@router.get("/v1/entities/", summary="Users, agents and runs (mem0 platform)")
def entities(memory: MemoryDep, principal: Principal = Depends(authenticate)) -> JSONResponse:
    found = memory.entities() if principal.admin else scoped_entities(memory, principal.scope)
    # The platform client reads "name" where memvault's REST says "id".
    return JSONResponse({"count": len(found),
                         "results": [{**e, "name": e["id"]} for e in found]})


@router.delete("/v2/entities/{entity_type}/{entity_name}/",
               summary="Delete every memory of a user, agent or run (mem0 platform)")
def delete_entity(entity_type: Literal["user", "agent", "run"], entity_name: str,
                  memory: MemoryDep,
                  principal: Principal = Depends(authenticate)) -> JSONResponse:
    key = f"{entity_type}_id"
    ids = principal.entities(*(entity_name if k == key else None for k in ENTITY_KEYS))
    if not memory.get_all(**ids, top_k=1)["results"]:
        raise NotFound(f"Entity {entity_type} {entity_name} not found")
    memory.delete_all(**ids, actor=principal.actor)
    return JSONResponse({"message": "Entity deleted successfully."})


def _check_all(memory: Memory, principal: Principal, body: BatchBody) -> None:
    """Every id visible before any change: a batch is refused whole, never half applied."""
    for item in body.memories:
        _record(memory, principal, str(item.memory_id))


@router.put("/v1/batch/", summary="Update several memories (mem0 platform)")
def batch_update(body: BatchBody, memory: MemoryDep,
                 principal: Principal = Depends(authenticate)) -> JSONResponse:
    _check_all(memory, principal, body)
    for item in body.memories:
        if item.text is None and item.metadata is None:
            raise HTTPException(400, f"memory {item.memory_id}: give text or metadata")
    for item in body.memories:
        memory.update(str(item.memory_id), text=item.text, metadata=item.metadata,
                      actor=principal.actor)
    return JSONResponse({"message": f"Successfully updated {len(body.memories)} memories"})


@router.delete("/v1/batch/", summary="Delete several memories (mem0 platform)")
def batch_delete(body: BatchBody, memory: MemoryDep,
                 principal: Principal = Depends(authenticate)) -> JSONResponse:
    _check_all(memory, principal, body)
    for item in body.memories:
        memory.delete(str(item.memory_id), actor=principal.actor)
    return JSONResponse({"message": f"Successfully deleted {len(body.memories)} memories"})
