"""While the guard refuses the store (StoreEmpty, StoreReplaced) every MCP tool answers the
`store_refused` tool error, as REST answers 503: never an empty result an agent would take
for "nothing remembered"."""

from __future__ import annotations

import anyio
import pytest
from mcp.shared.memory import create_connected_server_and_client_session

from memvault.guard.alerts import Alert
from memvault.guard.checks import Finding, Verdict
from memvault.memory import Memory
from memvault.server.mcp_tools import build_server

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
