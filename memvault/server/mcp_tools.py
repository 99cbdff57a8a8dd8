"""memvault as an MCP server: mem0's hosted MCP tool names (and OpenMemory's as aliases) over
the `Memory` service, with the official `mcp` SDK (v1; pinned <2 because v2 renames the
FastMCP server module and its tool-result types).

Every tool answers a structured result plus a one-line text; a memvault error becomes an MCP
tool error carrying its code and hint, so an agent sees why and what to do next, never an
empty result in its place."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from memvault.errors import MemvaultError
from memvault.memory import Memory

READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False)
WRITES = ToolAnnotations(readOnlyHint=False, destructiveHint=False)
DELETES = ToolAnnotations(readOnlyHint=False, destructiveHint=True)
ACTOR = "mcp"


def tool_error(exc: MemvaultError) -> ToolError:
    hint = f" Hint: {exc.hint}" if exc.hint else ""
    return ToolError(f"[{exc.code}] {exc.message}.{hint}")


def _result(summary: str, payload: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=summary)],
                          structuredContent=payload)


def _call(action: Callable[[], CallToolResult]) -> CallToolResult:
    try:
        return action()
    except MemvaultError as exc:
        raise tool_error(exc) from exc


def _filters(filters: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """mem0's clients send filters as an object; some agents send it as a JSON string."""
    if isinstance(filters, str):
        from memvault.errors import InvalidInput

        try:
            filters = json.loads(filters)
        except ValueError as exc:
            raise InvalidInput(f"filters is not valid JSON: {exc}",
                               hint="pass filters as an object") from None
        if not isinstance(filters, dict):
            raise InvalidInput("filters must be an object", hint='e.g. {"user_id": "alice"}')
    return filters


def build_server(memory: Memory) -> FastMCP:
    """An MCP server whose tools act on `memory` with the whole store in scope (stdio: the
    local user who can read the settings can read the store)."""
    server = FastMCP("memvault")

    def add_memory(text: str, user_id: str | None = None, agent_id: str | None = None,
                   run_id: str | None = None,
                   metadata: dict[str, Any] | None = None) -> CallToolResult:
        """Remember a text for a user, agent or run (at least one of the three ids)."""
        def act() -> CallToolResult:
            out = memory.add([{"role": "user", "content": text}], user_id=user_id,
                             agent_id=agent_id, run_id=run_id, metadata=metadata, actor=ACTOR)
            return _result(f"added {len(out['results'])} memories", out)
        return _call(act)

    def search_memories(query: str, user_id: str | None = None, agent_id: str | None = None,
                        run_id: str | None = None,
                        filters: dict[str, Any] | str | None = None,
                        top_k: int = 10) -> CallToolResult:
        """Search memories by meaning inside a user's, agent's or run's namespace."""
        def act() -> CallToolResult:
            out = memory.search(query, user_id=user_id, agent_id=agent_id, run_id=run_id,
                                filters=_filters(filters), top_k=top_k)
            return _result(f"found {len(out['results'])} memories", out)
        return _call(act)

    def get_memories(user_id: str | None = None, agent_id: str | None = None,
                     run_id: str | None = None, filters: dict[str, Any] | str | None = None,
                     top_k: int = 20) -> CallToolResult:
        """List the memories of a user, agent or run."""
        def act() -> CallToolResult:
            out = memory.get_all(user_id=user_id, agent_id=agent_id, run_id=run_id,
                                 filters=_filters(filters), top_k=top_k)
            return _result(f"listed {len(out['results'])} memories", out)
        return _call(act)

    def get_memory(memory_id: str) -> CallToolResult:
        """One memory by its id."""
        def act() -> CallToolResult:
            found = memory.get(memory_id)
            if found is None:
                from memvault.errors import NotFound

                raise NotFound(f"Memory with id {memory_id} not found",
                               hint="search_memories or get_memories list the ids")
            return _result(found.get("memory") or "", found)
        return _call(act)

    def update_memory(memory_id: str, text: str,
                      metadata: dict[str, Any] | None = None) -> CallToolResult:
        """Replace a memory's text (and metadata); the old version stays in its history."""
        def act() -> CallToolResult:
            out = memory.update(memory_id, text=text, metadata=metadata, actor=ACTOR)
            return _result(out.get("message", "updated"), out)
        return _call(act)

    def delete_memory(memory_id: str) -> CallToolResult:
        """Delete one memory (journaled: a restore can bring it back)."""
        def act() -> CallToolResult:
            out = memory.delete(memory_id, actor=ACTOR)
            return _result(out["message"], out)
        return _call(act)

    def delete_all_memories(user_id: str | None = None, agent_id: str | None = None,
                            run_id: str | None = None) -> CallToolResult:
        """Delete every memory of a user, agent or run (never the whole store)."""
        def act() -> CallToolResult:
            if all(v is None for v in (user_id, agent_id, run_id)):
                from memvault.errors import InvalidInput

                raise InvalidInput("give user_id, agent_id or run_id",
                                   hint="delete_all_memories never deletes everything")
            memory.delete_all(user_id=user_id, agent_id=agent_id, run_id=run_id, actor=ACTOR)
            return _result("deleted", {"message": "All relevant memories deleted"})
        return _call(act)

    tools: list[tuple[Callable[..., CallToolResult], tuple[str, ...], ToolAnnotations]] = [
        (add_memory, ("add_memory", "add_memories"), WRITES),
        (search_memories, ("search_memories", "search_memory"), READ_ONLY),
        (get_memories, ("get_memories", "list_memories"), READ_ONLY),
        (get_memory, ("get_memory",), READ_ONLY),
        (update_memory, ("update_memory",), WRITES),
        (delete_memory, ("delete_memory", "delete_memories"), DELETES),
        (delete_all_memories, ("delete_all_memories",), DELETES),
    ]
    for fn, names, hints in tools:
        for name in names:
            server.add_tool(fn, name=name, annotations=hints)
    return server
