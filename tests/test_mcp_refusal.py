"""While the guard refuses the store (StoreEmpty, StoreReplaced) every MCP tool answers the
`store_refused` tool error, as REST answers 503: never an empty result an agent would take
for "nothing remembered"."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.memory import create_connected_server_and_client_session

from memvault.backup.snapshot import create_backup
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.guard.alerts import Alert
from memvault.guard.api import Guard
from memvault.guard.checks import Finding, Verdict
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.mcp_tools import build_server
from tests.peers.http_peer import HTTPPeer
from tests.peers.live_server import LiveServer
from tests.test_guard import guarded_settings, other_database, running, webhook

__all__ = ["webhook"]  # the fixture, shared with the guard tests

MEMORY_ID = "00000000-0000-4000-8000-000000000001"
CALLS = [
    ("add_memory", {"text": "x", "user_id": "a"}),
    ("add_memories", {"text": "x", "user_id": "a"}),
    ("search_memories", {"query": "x", "user_id": "a"}),
    ("search_memory", {"query": "x", "user_id": "a"}),
    ("get_memories", {"user_id": "a"}),
    ("list_memories", {"user_id": "a"}),
    ("get_memory", {"memory_id": MEMORY_ID}),
    ("update_memory", {"memory_id": MEMORY_ID, "text": "y"}),
    ("delete_memory", {"memory_id": MEMORY_ID}),
    ("delete_memories", {"memory_ids": [MEMORY_ID]}),
    ("list_entities", {}),
    ("delete_entities", {"user_id": "a"}),
    ("delete_all_memories", {"user_id": "a"}),
]


@pytest.mark.parametrize("alert", [Alert.StoreEmpty, Alert.StoreReplaced])
def test_every_tool_refuses_while_the_store_is_refused(memory: Memory, alert: Alert) -> None:
    memory.add("kept", user_id="a", infer=False)
    refusing = Verdict([Finding(alert, True, "the store is not the guarded one",
                                {"hint": "run memvault restore"})])
    verdicts: list[Verdict | None] = [refusing]
    server = build_server(memory, lambda: verdicts[0])

    async def main() -> None:
        async with create_connected_server_and_client_session(server) as session:
            for name, args in CALLS:
                result = await session.call_tool(name, args)
                assert result.isError, name
                message = result.content[0].text  # type: ignore[union-attr]
                assert "[store_refused]" in message, message
                assert alert.value in message and "run memvault restore" in message
            verdicts[0] = Verdict([Finding(alert, False, "resolved")])  # the guard cleared
            served = await session.call_tool("get_memories", {"user_id": "a"})
            assert not served.isError and served.structuredContent is not None
            assert [r["memory"] for r in served.structuredContent["results"]] == ["kept"]

    anyio.run(main)
    assert [r.id for r in memory.store.list(None, limit=10)] != []  # nothing was deleted


def test_http_tools_refuse_while_a_real_guard_refuses_an_emptied_store(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    webhook: HTTPPeer, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """The guard of `serve` (not a stand-in verdict): the store was swapped for an empty one
    and auto-restore is off, so REST answers 503 and `/mcp` answers store_refused."""
    memory.add("something worth keeping", user_id="alice", infer=False)
    original = guarded_settings(settings, webhook)
    create_backup(memory.store, original)
    with running(Guard(original, memory)):
        pass
    recreated = load_settings({"data_dir": settings.data_dir, "auto_restore": "never",
                               "database_url": other_database(backend, tmp_path, request)})
    with Memory(recreated, embedder=local_embedder) as fresh, \
            running(Guard(recreated, fresh)) as guard, \
            LiveServer(app_over(recreated, fresh, guard=guard)) as server:
        rest = httpx.post(f"{server.url}/search", json={"query": "x", "user_id": "alice"})
        assert rest.status_code == 503, rest.text

        async def main() -> None:
            async with streamablehttp_client(f"{server.url}/mcp") as (read, write, _), \
                    ClientSession(read, write) as session:
                await session.initialize()
                found = await session.call_tool("search_memories",
                                                {"query": "worth keeping", "user_id": "alice"})
                assert found.isError
                message = found.content[0].text  # type: ignore[union-attr]
                assert "[store_refused]" in message and "StoreEmpty" in message, message
                assert found.structuredContent is None

        anyio.run(main)
