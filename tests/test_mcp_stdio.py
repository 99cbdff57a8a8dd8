"""`memvault mcp` over stdio, driven by the `mcp` SDK's own client against a subprocess of
`python -m memvault mcp`, on both backends."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"add_memory", "search_memories", "get_memories", "get_memory", "update_memory",
         "delete_memory", "delete_all_memories", "add_memories", "search_memory",
         "list_memories", "delete_memories", "list_entities", "delete_entities"}


def _params(tmp_path: Path, database_url: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMVAULT_")}
    env["PYTHONPATH"] = str(ROOT)
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "memvault", "--data-dir", str(tmp_path / "data"),
              "--database-url", database_url, "mcp"],
        env=env, cwd=str(tmp_path))


def _run(tmp_path: Path, database_url: str, body: Any) -> Any:
    async def main() -> Any:
        async with stdio_client(_params(tmp_path, database_url)) as (read, write), \
                ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.instructions and "search_memories" in init.instructions
            return await body(session)
    return anyio.run(main)


@pytest.mark.slow
def test_stdio_tools_round_trip(tmp_path: Path, database_url: str) -> None:
    async def body(session: ClientSession) -> None:
        listed = {t.name: t for t in (await session.list_tools()).tools}
        assert set(listed) >= TOOLS
        for name in ("search_memories", "search_memory", "get_memories", "get_memory"):
            annotations = listed[name].annotations
            assert annotations is not None and annotations.readOnlyHint is True
        for name in ("delete_memory", "delete_memories", "delete_all_memories",
                     "delete_entities"):
            annotations = listed[name].annotations
            assert annotations is not None and annotations.destructiveHint is True

        added = await session.call_tool(
            "add_memory", {"text": "Alice is allergic to peanuts", "user_id": "alice"})
        assert not added.isError, added.content
        assert added.structuredContent is not None
        memory_id = added.structuredContent["results"][0]["id"]
        await session.call_tool("add_memories", {"text": "Bob likes tea", "user_id": "bob"})

        found = await session.call_tool(
            "search_memories", {"query": "what food allergies", "user_id": "alice"})
        assert not found.isError, found.content
        assert found.structuredContent is not None
        results = found.structuredContent["results"]
        assert [r["id"] for r in results] == [memory_id]
        assert results[0]["memory"] == "Alice is allergic to peanuts"
        assert found.content[0].type == "text" and "1" in found.content[0].text

        alias = await session.call_tool("search_memory", {"query": "tea", "user_id": "bob"})
        assert alias.structuredContent is not None
        assert [r["memory"] for r in alias.structuredContent["results"]] == ["Bob likes tea"]

        one = await session.call_tool("get_memory", {"memory_id": memory_id})
        assert one.structuredContent is not None and one.structuredContent["id"] == memory_id

        updated = await session.call_tool(
            "update_memory", {"memory_id": memory_id, "text": "Alice is allergic to nuts"})
        assert not updated.isError, updated.content
        listed_alice = await session.call_tool("get_memories", {"user_id": "alice"})
        assert listed_alice.structuredContent is not None
        assert [r["memory"] for r in listed_alice.structuredContent["results"]] == [
            "Alice is allergic to nuts"]

        entities = await session.call_tool("list_entities", {})
        assert entities.structuredContent is not None
        assert {e["id"] for e in entities.structuredContent["results"]} == {"alice", "bob"}
        deleted = await session.call_tool("delete_memory", {"memory_id": memory_id})
        assert not deleted.isError, deleted.content
        gone = await session.call_tool("get_memory", {"memory_id": memory_id})
        assert gone.isError
        assert "[not_found]" in gone.content[0].text  # type: ignore[union-attr]
        bob = await session.call_tool("get_memories", {"user_id": "bob"})
        assert bob.structuredContent is not None
        bob_ids = [r["id"] for r in bob.structuredContent["results"]]
        partly = await session.call_tool("delete_memories", {"memory_ids": [*bob_ids, memory_id]})
        assert partly.isError  # one id unknown: none deleted
        assert (await session.call_tool("get_memory", {"memory_id": bob_ids[0]})).isError is False
        both = await session.call_tool("delete_memories", {"memory_ids": bob_ids})
        assert not both.isError, both.content
        await session.call_tool("add_memory", {"text": "Carol", "user_id": "carol"})
        dropped = await session.call_tool("delete_entities", {"user_id": "carol"})
        assert not dropped.isError, dropped.content
        left = await session.call_tool("list_entities", {})
        assert left.structuredContent == {"results": []}

    _run(tmp_path, database_url, body)


@pytest.mark.slow
def test_stdio_bad_arguments_are_tool_errors_with_code_and_hint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store' / 'memvault.db'}"

    async def body(session: ClientSession) -> None:
        no_ids = await session.call_tool("add_memory", {"text": "orphan"})
        assert no_ids.isError
        assert "[invalid_input]" in no_ids.content[0].text  # type: ignore[union-attr]

        wide = await session.call_tool("delete_all_memories", {})
        assert wide.isError
        text = wide.content[0].text  # type: ignore[union-attr]
        assert "[invalid_input]" in text and "Hint:" in text

        bad_filters = await session.call_tool(
            "search_memories", {"query": "x", "user_id": "a", "filters": "{not json"})
        assert bad_filters.isError
        assert "[invalid_input]" in bad_filters.content[0].text  # type: ignore[union-attr]

        bad_id = await session.call_tool("get_memory", {"memory_id": "not-a-uuid"})
        assert bad_id.isError

        missing = await session.call_tool("search_memories", {"user_id": "a"})
        assert missing.isError  # query is required: the SDK's argument validation

        empty = await session.call_tool("get_memories", {"user_id": "nobody"})
        assert not empty.isError
        assert empty.structuredContent == {"results": []}

    _run(tmp_path, url, body)
