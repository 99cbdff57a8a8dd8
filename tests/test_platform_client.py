"""mem0's own client library (the real `mem0ai` package) against a live memvault server:
the platform API subset, scoped keys included, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from memvault.config import Settings
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.deps import runtime_of
from memvault.server.keys import create_key
from tests.peers.live_server import LiveServer

ADMIN = "mv-admin-platform-test-key"


@pytest.fixture
def mem0_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # No internet here, and the tests must not write to the real HOME.
    monkeypatch.setenv("MEM0_TELEMETRY", "False")
    monkeypatch.setenv("MEM0_DIR", str(tmp_path / "mem0"))
    import mem0.client.main as client_module

    return client_module


@pytest.fixture
def server(settings: Settings, memory: Memory) -> Iterator[str]:
    app = app_over(settings.model_copy(update={"admin_api_key": SecretStr(ADMIN)}), memory)
    try:
        with LiveServer(app) as live:
            yield live.url
    finally:
        runtime_of(app).add_batcher.stop()
        runtime_of(app).embedder.stop()


def test_memory_client_round_trip(mem0_client: Any, server: str) -> None:
    client = mem0_client.MemoryClient(api_key=ADMIN, host=server)
    added = client.add("I like green tea", user_id="alice", infer=False)
    assert [r["event"] for r in added["results"]] == ["ADD"]
    memory_id = added["results"][0]["id"]
    client.add([{"role": "user", "content": "I live in Lisbon"}], user_id="bob", infer=False)

    found = client.search("tea", filters={"user_id": "alice"}, top_k=5)["results"]
    assert found[0]["id"] == memory_id and found[0]["memory"] == "I like green tea"
    assert client.get(memory_id)["memory"] == "I like green tea"
    listed = client.get_all(filters={"user_id": "alice"})
    assert listed["count"] == 1 and [m["id"] for m in listed["results"]] == [memory_id]

    client.update(memory_id, text="I like black tea")
    assert client.get(memory_id)["memory"] == "I like black tea"
    events = [h["event"] for h in client.history(memory_id)]
    assert events == ["ADD", "UPDATE"]

    users = client.users()["results"]
    assert {(u["type"], u["name"]) for u in users} == {("user", "alice"), ("user", "bob")}

    client.delete(memory_id)
    assert client.get_all(filters={"user_id": "alice"})["results"] == []
    client.delete_all(user_id="bob")
    assert client.get_all(filters={"user_id": "bob"})["results"] == []


def test_pagination_and_batch(mem0_client: Any, server: str) -> None:
    import mem0.exceptions as errors

    client = mem0_client.MemoryClient(api_key=ADMIN, host=server)
    ids = [client.add(f"fact {i}", user_id="carol", infer=False)["results"][0]["id"]
           for i in range(5)]
    first = client.get_all(filters={"user_id": "carol"}, page=1, page_size=2)
    second = client.get_all(filters={"user_id": "carol"}, page=2, page_size=2)
    assert len(first["results"]) == 2 and first["next"] and first["previous"] is None
    assert {m["id"] for m in first["results"]}.isdisjoint(m["id"] for m in second["results"])

    last = client.get_all(filters={"user_id": "carol"}, page=3, page_size=2)
    assert len(last["results"]) == 1 and last["next"] is None and last["previous"]
    with pytest.raises(errors.ValidationError, match="page \\* page_size"):
        client.get_all(filters={"user_id": "carol"}, page=11, page_size=100)

    client.batch_update([{"memory_id": ids[0], "text": "fact zero"}])
    assert client.get(ids[0])["memory"] == "fact zero"
    client.batch_delete([{"memory_id": i} for i in ids[:3]])
    assert len(client.get_all(filters={"user_id": "carol"})["results"]) == 2
    client.delete_users(user_id="carol")
    assert client.get_all(filters={"user_id": "carol"})["results"] == []


def test_scoped_key_sees_nothing_of_another_user(mem0_client: Any, server: str,
                                                 memory: Memory) -> None:
    import mem0.exceptions as errors

    admin = mem0_client.MemoryClient(api_key=ADMIN, host=server)
    bob_id = admin.add("bob's secret", user_id="bob", infer=False)["results"][0]["id"]
    _, token = create_key(memory.store, user_id="alice")
    alice = mem0_client.MemoryClient(api_key=token, host=server)
    alice_id = alice.add("alice's note", user_id="alice", infer=False)["results"][0]["id"]

    refused = [
        lambda: alice.get(bob_id),
        lambda: alice.history(bob_id),
        lambda: alice.update(bob_id, text="x"),
        lambda: alice.delete(bob_id),
        lambda: alice.search("secret", filters={"user_id": "bob"}),
        lambda: alice.get_all(filters={"user_id": "bob"}),
        lambda: alice.add("x", user_id="bob", infer=False),
        lambda: alice.delete_all(user_id="bob"),
        lambda: alice.delete_users(user_id="bob"),
        lambda: alice.batch_delete([{"memory_id": bob_id}]),
        lambda: alice.batch_update([{"memory_id": bob_id, "text": "x"}]),
    ]
    for call in refused:
        # 403 (another namespace, mem0 maps it to AuthenticationError) or 404 (not yours):
        # never a server error, never bob's text.
        with pytest.raises((errors.AuthenticationError, errors.MemoryNotFoundError)) as caught:
            call()
        assert "secret" not in str(caught.value)
    # Filters without a user id are confined to the key's scope.
    either = {"OR": [{"user_id": "bob"}, {"user_id": "alice"}]}
    assert [m["id"] for m in alice.get_all(filters=either)["results"]] == [alice_id]
    assert [m["id"] for m in alice.search("secret", filters=either)["results"]] == [alice_id]
    assert {m["id"] for m in alice.search("note", filters={"user_id": "alice"})["results"]
            } == {alice_id}
    assert [u["name"] for u in alice.users()["results"]] == ["alice"]
    assert admin.get(bob_id)["memory"] == "bob's secret"  # untouched by every refusal
    with pytest.raises(ValueError):
        mem0_client.MemoryClient(api_key="not-a-key", host=server)


def test_async_memory_client(mem0_client: Any, server: str) -> None:
    async def scenario() -> None:
        client = mem0_client.AsyncMemoryClient(api_key=ADMIN, host=server)
        added = await client.add("async fact", user_id="dave", infer=False)
        memory_id = added["results"][0]["id"]
        found = await client.search("async", filters={"user_id": "dave"})
        assert found["results"][0]["id"] == memory_id
        assert (await client.get(memory_id))["memory"] == "async fact"
        await client.update(memory_id, text="async fact 2")
        assert [h["event"] for h in await client.history(memory_id)] == ["ADD", "UPDATE"]
        assert (await client.get_all(filters={"user_id": "dave"}))["count"] == 1
        await client.delete_all(user_id="dave")
        assert (await client.get_all(filters={"user_id": "dave"}))["results"] == []

    asyncio.run(scenario())
