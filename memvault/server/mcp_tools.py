"""memvault as an MCP server: mem0's hosted MCP tool names (and OpenMemory's as aliases) over
the `Memory` service, with the official `mcp` SDK (v1; pinned <2 because v2 removes
`mcp.server.fastmcp`: docs/mcp.md "SDK version").

Every tool answers a structured result plus a one-line text; a memvault error becomes an MCP
tool error carrying its code and hint, so an agent sees why and what to do next, never an
empty result in its place."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import HTTPException
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from memvault.errors import InvalidInput, MemvaultError, NotFound
from memvault.memory import Memory
from memvault.server.auth import Principal
from memvault.server.routes import visible

if TYPE_CHECKING:
    from memvault.guard.checks import Verdict

INSTRUCTIONS = ("Long-term memory. Call search_memories before answering questions about the "
                "user and add_memory for facts worth keeping; name the user with user_id.")
READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False)
WRITES = ToolAnnotations(readOnlyHint=False, destructiveHint=False)
DELETES = ToolAnnotations(readOnlyHint=False, destructiveHint=True)


def _actor(principal: Principal) -> str:
    """The journal's author: the key's, marked as coming through MCP."""
    return "mcp:" + principal.actor


def tool_error(exc: MemvaultError) -> ToolError:
    hint = f" Hint: {exc.hint}" if exc.hint else ""
    return ToolError(f"[{exc.code}] {exc.message}.{hint}")


def _result(summary: str, payload: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=summary)],
                          structuredContent=payload)


STDIO = Principal(admin=True)


def principal_of(ctx: Context[Any, Any, Any]) -> Principal:
    """The key the HTTP request carried (set by `mcp_http.authenticated`); over stdio, where
    there is no request, the local user who can read the settings: the whole store."""
    request = ctx.request_context.request
    if request is None:
        return STDIO
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise ToolError("[auth_required] no principal on this request. Hint: send "
                        "Authorization: Bearer <key>")
    return principal


def _call(action: Callable[[], CallToolResult]) -> CallToolResult:
    try:
        return action()
    except MemvaultError as exc:
        raise tool_error(exc) from exc
    except HTTPException as exc:  # the REST scope rules' 403
        raise ToolError(f"[forbidden] {exc.detail}") from exc


def _filters(filters: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """mem0's clients send filters as an object; some agents send it as a JSON string."""
    if isinstance(filters, str):
        try:
            filters = json.loads(filters)
        except ValueError as exc:
            raise InvalidInput(f"filters is not valid JSON: {exc}",
                               hint="pass filters as an object") from None
        if not isinstance(filters, dict):
            raise InvalidInput("filters must be an object", hint='e.g. {"user_id": "alice"}')
    return filters


def build_server(memory: Memory, verdict: Callable[[], Verdict | None] = lambda: None,
                 allowed_hosts: tuple[str, ...] = ()) -> FastMCP:
    """An MCP server whose tools act on `memory` within the caller's scope (`principal_of`).
    `verdict`: the guard's last verdict; while it refuses the store every tool answers
    `store_refused`, never an empty result. `allowed_hosts`: Host values accepted beyond
    loopback (DNS-rebinding protection is always on)."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *allowed_hosts]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts])
    server = FastMCP("memvault", instructions=INSTRUCTIONS, stateless_http=True, json_response=True,
                     transport_security=security)

    def scoped(ctx: Context[Any, Any, Any]) -> Principal:
        current = verdict()
        refused = current.refusing_data() if current else []
        if refused:
            hint = str(refused[0].details.get("hint", "")) or "run memvault status"
            raise ToolError("[store_refused] " + "; ".join(
                f"{f.alert}: {f.summary}" for f in refused) + f". Hint: {hint}")
        return principal_of(ctx)

    async def add_memory(text: str, user_id: str | None = None, agent_id: str | None = None,
                   run_id: str | None = None,
                   metadata: dict[str, Any] | None = None,
                   ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """Remember a text for a user, agent or run (at least one of the three ids)."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            ids = who.entities(user_id, agent_id, run_id)
            out = memory.add([{"role": "user", "content": text}], **ids, metadata=metadata,
                             actor=_actor(who))
            return _result(f"added {len(out['results'])} memories", out)
        return await anyio.to_thread.run_sync(_call, act)

    async def search_memories(query: str, user_id: str | None = None, agent_id: str | None = None,
                        run_id: str | None = None,
                        filters: dict[str, Any] | str | None = None,
                        top_k: int = 10,
                        ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """Search memories by meaning inside a user's, agent's or run's namespace."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            ids = who.entities(user_id, agent_id, run_id)
            parsed = _filters(filters)
            who.check_filters(parsed)
            out = memory.search(query, **ids, filters=parsed, top_k=top_k)
            return _result(f"found {len(out['results'])} memories", out)
        return await anyio.to_thread.run_sync(_call, act)

    async def get_memories(user_id: str | None = None, agent_id: str | None = None,
                     run_id: str | None = None, filters: dict[str, Any] | str | None = None,
                     top_k: int = 20,
                     ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """List the memories of a user, agent or run."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            ids = who.entities(user_id, agent_id, run_id)
            parsed = _filters(filters)
            who.check_filters(parsed)
            out = memory.get_all(**ids, filters=parsed, top_k=top_k)
            return _result(f"listed {len(out['results'])} memories", out)
        return await anyio.to_thread.run_sync(_call, act)

    async def get_memory(memory_id: str,
                   ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """One memory by its id."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            found = memory.get(memory_id)
            if found is not None:
                visible(memory, who, memory_id)
            else:
                raise NotFound(f"Memory with id {memory_id} not found",
                               hint="search_memories or get_memories list the ids")
            return _result(found.get("memory") or "", found)
        return await anyio.to_thread.run_sync(_call, act)

    async def update_memory(memory_id: str, text: str,
                      metadata: dict[str, Any] | None = None,
                      ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """Replace a memory's text (and metadata); the old version stays in its history."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            visible(memory, who, memory_id)
            out = memory.update(memory_id, text=text, metadata=metadata, actor=_actor(who))
            return _result(out.get("message", "updated"), out)
        return await anyio.to_thread.run_sync(_call, act)

    async def delete_memory(memory_id: str,
                      ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """Delete one memory (journaled: a restore can bring it back)."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            visible(memory, who, memory_id)
            out = memory.delete(memory_id, actor=_actor(who))
            return _result(out["message"], out)
        return await anyio.to_thread.run_sync(_call, act)

    async def delete_all_memories(user_id: str | None = None, agent_id: str | None = None,
                            run_id: str | None = None,
                            ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """Delete every memory of a user, agent or run (never the whole store)."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            if all(v is None for v in (user_id, agent_id, run_id)):
                raise InvalidInput("give user_id, agent_id or run_id",
                                   hint="delete_all_memories never deletes everything")
            ids = who.entities(user_id, agent_id, run_id)
            memory.delete_all(**ids, actor=_actor(who))
            return _result("deleted", {"message": "All relevant memories deleted"})
        return await anyio.to_thread.run_sync(_call, act)

    async def delete_memories(memory_ids: list[str],
                              ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """Delete several memories by id (OpenMemory's tool): all of them or, if one is not
        found, none."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            for memory_id in memory_ids:
                if memory.record(memory_id) is None:
                    raise NotFound(f"Memory with id {memory_id} not found",
                                   hint="nothing was deleted")
                visible(memory, who, memory_id)
            for memory_id in memory_ids:
                memory.delete(memory_id, actor=_actor(who))
            return _result(f"deleted {len(memory_ids)} memories",
                           {"message": "Memories deleted successfully", "ids": memory_ids})
        return await anyio.to_thread.run_sync(_call, act)

    async def list_entities(ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """The users, agents and runs that have memories (a scoped key: within its scope)."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            from memvault.server.routes import scoped_entities

            rows = memory.entities() if who.admin else scoped_entities(memory, who.scope)
            return _result(f"{len(rows)} entities", {"results": rows})
        return await anyio.to_thread.run_sync(_call, act)

    async def delete_entities(user_id: str | None = None, agent_id: str | None = None,
                              run_id: str | None = None,
                              ctx: Context[Any, Any, Any] | None = None) -> CallToolResult:
        """Delete users, agents or runs with all their memories (admin only, as on REST)."""
        who = scoped(ctx)  # type: ignore[arg-type]

        def act() -> CallToolResult:
            if not who.admin:
                raise HTTPException(403, "Admin role required.")
            given = {"user_id": user_id, "agent_id": agent_id, "run_id": run_id}
            if all(v is None for v in given.values()):
                raise InvalidInput("give user_id, agent_id or run_id",
                                   hint="delete_entities never deletes everything")
            for key, value in given.items():
                if value is not None:
                    memory.delete_all(**{key: value}, actor=_actor(who))
            return _result("entities deleted", {"message": "Entity deleted"})
        return await anyio.to_thread.run_sync(_call, act)

    Tool = Callable[..., Awaitable[CallToolResult]]
    tools: list[tuple[Tool, tuple[str, ...], ToolAnnotations]] = [
        (add_memory, ("add_memory", "add_memories"), WRITES),
        (search_memories, ("search_memories", "search_memory"), READ_ONLY),
        (get_memories, ("get_memories", "list_memories"), READ_ONLY),
        (get_memory, ("get_memory",), READ_ONLY),
        (update_memory, ("update_memory",), WRITES),
        (delete_memory, ("delete_memory",), DELETES),
        (delete_memories, ("delete_memories",), DELETES),
        (list_entities, ("list_entities",), READ_ONLY),
        (delete_entities, ("delete_entities",), DELETES),
        (delete_all_memories, ("delete_all_memories",), DELETES),
    ]
    for fn, names, hints in tools:
        for name in names:
            server.add_tool(fn, name=name, annotations=hints)
    return server
