"""`/mcp` on the API server: the SDK's streamable HTTP client against a live uvicorn on
127.0.0.1, with the REST keys: admin, scoped (isolation on every tool), none, unknown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.types import CallToolResult
from pydantic import SecretStr

from memvault.config import Settings
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.keys import create_key
from tests.peers.live_server import LiveServer

ADMIN = "admin-key-0123456789abcdef"


@pytest.fixture
def live(settings: Settings, memory: Memory) -> Iterator[str]:
    app = app_over(settings.model_copy(update={"admin_api_key": SecretStr(ADMIN)}), memory)
    with LiveServer(app) as server:
        yield server.url


def session_run(url: str, token: str, body: Any) -> Any:
    async def main() -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        async with streamablehttp_client(f"{url}/mcp", headers=headers) as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            return await body(session)
    return anyio.run(main)


def text(result: CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


def test_http_round_trip_and_scoped_isolation_on_every_tool(live: str, memory: Memory) -> None:
    bob_id = memory.add("Bob's bank PIN is 4321", user_id="bob", infer=False)["results"][0]["id"]
    _, alice_token = create_key(memory.store, user_id="alice")

    async def as_alice(session: ClientSession) -> None:
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {"add_memory", "search_memories", "delete_all_memories"} <= tools
        added = await session.call_tool("add_memory", {"text": "Alice likes green tea"})
        assert not added.isError, text(added)
        assert added.structuredContent is not None
        (row,) = added.structuredContent["results"]
        own = memory.record(row["id"])
        assert own is not None and own.user_id == "alice"  # the scope filled user_id

        found = await session.call_tool("search_memories", {"query": "PIN bank tea"})
        assert found.structuredContent is not None
        assert [r["id"] for r in found.structuredContent["results"]] == [row["id"]]

        # Another tenant, named in arguments, filters (OR/NOT) or ids: refused or not found.
        for name, args in [
            ("search_memories", {"query": "PIN", "user_id": "bob"}),
            ("search_memory", {"query": "PIN", "filters": {"user_id": "bob"}}),
            ("get_memories", {"user_id": "bob"}),
            ("list_memories", {"filters": {"user_id": {"eq": "bob"}}}),
            ("add_memory", {"text": "x", "user_id": "bob"}),
            ("delete_all_memories", {"user_id": "bob"}),
            ("get_memory", {"memory_id": bob_id}),
            ("update_memory", {"memory_id": bob_id, "text": "hijacked"}),
            ("delete_memory", {"memory_id": bob_id}),
            ("delete_memories", {"memory_ids": [bob_id]}),
            ("delete_entities", {"user_id": "bob"}),
        ]:
            result = await session.call_tool(name, args)
            assert result.isError, (name, result)
            assert "[forbidden]" in text(result) or "[not_found]" in text(result), text(result)
        entities = await session.call_tool("list_entities", {})
        assert entities.structuredContent is not None
        assert [e["id"] for e in entities.structuredContent["results"]] == ["alice"]
        for filters in ({"OR": [{"user_id": "bob"}, {"user_id": "alice"}]},
                        {"NOT": [{"user_id": "alice"}]}):
            widened = await session.call_tool("search_memories",
                                              {"query": "PIN", "filters": filters})
            rows = (widened.structuredContent or {}).get("results", [])
            assert all(r["id"] != bob_id for r in rows), (filters, rows)

    session_run(live, alice_token, as_alice)
    bob = memory.get(bob_id)
    assert bob is not None and bob["memory"] == "Bob's bank PIN is 4321"

    async def as_admin(session: ClientSession) -> None:
        found = await session.call_tool("search_memories", {"query": "PIN", "user_id": "bob"})
        assert found.structuredContent is not None
        assert [r["id"] for r in found.structuredContent["results"]] == [bob_id]

    session_run(live, ADMIN, as_admin)


def test_http_refuses_without_a_valid_key_and_checks_host(live: str) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(f"{live}/mcp", json=init, headers=accept).status_code == 401
    wrong = httpx.post(f"{live}/mcp", json=init,
                       headers={**accept, "Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = httpx.post(f"{live}/mcp", json=init,
                    headers={**accept, "Authorization": f"Bearer {ADMIN}"})
    assert ok.status_code == 200, ok.text
    rebound = httpx.post(f"{live}/mcp", json=init, headers={
        **accept, "Authorization": f"Bearer {ADMIN}", "Host": "evil.example"})
    assert rebound.status_code in (403, 421), rebound.text
    foreign = httpx.post(f"{live}/mcp", json=init, headers={
        **accept, "Authorization": f"Bearer {ADMIN}", "Origin": "http://evil.example"})
    assert foreign.status_code == 403, foreign.text


def test_http_open_on_loopback_without_admin_key_and_bad_arguments(
        settings: Settings, memory: Memory) -> None:
    async def body(session: ClientSession) -> None:
        added = await session.call_tool("add_memory", {"text": "open mode", "user_id": "u"})
        assert not added.isError, text(added)
        for name, args, code in [
            ("search_memories", {"user_id": "u"}, ""),  # query missing: SDK validation
            ("search_memories", {"query": "x", "user_id": "u", "filters": "{bad"},
             "[invalid_input]"),
            ("get_memories", {"user_id": "u", "top_k": -3}, "[invalid_input]"),
            ("add_memory", {"text": "no namespace"}, "[invalid_input]"),
            ("get_memory", {"memory_id": "not-a-uuid"}, "[invalid_input]"),
            ("delete_all_memories", {}, "[invalid_input]"),
        ]:
            result = await session.call_tool(name, args)
            assert result.isError, (name, args)
            assert code in text(result), text(result)

    with LiveServer(app_over(settings, memory)) as server:  # no MEMVAULT_ADMIN_API_KEY
        async def main() -> None:
            async with streamablehttp_client(f"{server.url}/mcp") as (read, write, _), \
                    ClientSession(read, write) as session:
                await session.initialize()
                await body(session)
        anyio.run(main)
