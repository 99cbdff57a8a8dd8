"""The REST API: mem0's routes and shapes, the marked fixes, errors, request ids, ops."""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from memvault.cli.status import collect_status
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.server.app import app_over
from tests.peers.chat_server import ChatServer
from tests.peers.embedding_server import EmbeddingServer

UUID_LEN = 36


def add(client: TestClient, text: str, **ids: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": text}], **ids}
    response = client.post("/memories", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_add_returns_mem0_shape(client: TestClient) -> None:
    response = client.post("/memories", json={
        "messages": [{"role": "user", "content": "I love vegetable pizza"},
                     {"role": "assistant", "content": "Noted", "name": "bot-7"},
                     {"role": "system", "content": "be nice"}],
        "user_id": "alice", "metadata": {"src": "chat", "user_id": "mallory"}, "infer": False})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["memory"], r["event"], r["role"], r["actor_id"]) for r in results] == [
        ("I love vegetable pizza", "ADD", "user", None), ("Noted", "ADD", "assistant", "bot-7")]
    assert all(len(r["id"]) == UUID_LEN for r in results)
    item = client.get(f"/memories/{results[0]['id']}").json()
    assert set(item) >= {"id", "memory", "hash", "metadata", "score", "created_at",
                         "updated_at", "user_id"}
    assert item["score"] is None and item["user_id"] == "alice"
    assert item["metadata"] == {"src": "chat"}  # tenant keys in metadata are ignored
    assert item["created_at"] == item["updated_at"] and item["created_at"].endswith("+00:00")


def test_add_without_llm_stores_verbatim_and_needs_an_id(client: TestClient) -> None:
    assert add(client, "Lives in Lisbon", user_id="bob")["event"] == "ADD"  # infer defaults on
    again = client.post("/memories", json={"messages": [{"role": "user", "content": "x"}]})
    assert again.status_code == 400
    assert "user_id, agent_id or run_id" in again.json()["detail"]
    assert client.post("/memories", json={"user_id": "bob"}).status_code == 422


def test_get_unknown_is_404_and_malformed_is_422(client: TestClient) -> None:
    unknown = str(uuid.uuid4())
    response = client.get(f"/memories/{unknown}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Memory with id {unknown} not found"}
    for method in ("get", "delete"):
        bad = getattr(client, method)("/memories/not-a-uuid")
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["path", "memory_id"]
    assert client.put("/memories/not-a-uuid", json={"text": "x"}).status_code == 422
    assert client.get("/memories/not-a-uuid/history").status_code == 422
    assert client.put(f"/memories/{unknown}", json={"text": "x"}).status_code == 404
    assert client.delete(f"/memories/{unknown}").json() == {
        "detail": f"Memory with id {unknown} not found"}
    assert client.get(f"/memories/{unknown}/history").status_code == 404


def test_list_and_search(client: TestClient) -> None:
    add(client, "I love pizza with mushrooms", user_id="alice")
    add(client, "The central bank raised rates", user_id="alice", agent_id="news")
    add(client, "I love pizza too", user_id="bob")
    listed = client.get("/memories", params={"user_id": "alice"}).json()["results"]
    assert len(listed) == 2 and {r["user_id"] for r in listed} == {"alice"}
    assert len(client.get("/memories", params={"user_id": "alice", "top_k": 1}).json()[
        "results"]) == 1
    assert len(client.get("/memories").json()["results"]) == 3  # admin listing
    assert client.get("/memories", params={"user_id": ""}).status_code == 400  # not "all"
    assert client.delete("/memories", params={"user_id": ""}).status_code == 400
    narrowed = client.get("/memories", params={
        "user_id": "alice", "filters": json.dumps({"agent_id": "news"})}).json()["results"]
    assert [r["memory"] for r in narrowed] == ["The central bank raised rates"]

    found = client.post("/search", json={"query": "pizza", "filters": {"user_id": "alice"},
                                         "explain": True}).json()["results"]
    assert found[0]["memory"] == "I love pizza with mushrooms"
    assert 0 < found[0]["score"] <= 1 and "score_details" in found[0]
    assert all(r["user_id"] == "alice" for r in found)
    deprecated = client.post("/search", json={"query": "pizza", "user_id": "bob"}).json()
    assert [r["memory"] for r in deprecated["results"]] == ["I love pizza too"]
    ops = client.post("/search", json={"query": "pizza", "filters": {
        "AND": [{"user_id": "alice"}, {"agent_id": {"in": ["news"]}}]}, "threshold": 0})
    assert [r["memory"] for r in ops.json()["results"]] == ["The central bank raised rates"]
    unscoped = client.post("/search", json={"query": "pizza", "filters": {"x": 1}})
    assert unscoped.status_code == 400
    assert "user_id" in unscoped.json()["detail"]
    bad_op = client.post("/search", json={"query": "p", "filters": {
        "user_id": "alice", "k": {"near": 1}}})
    assert bad_op.status_code == 400


def test_update_history_delete(client: TestClient) -> None:
    memory_id = add(client, "Lives in Porto", user_id="carl")["id"]
    assert client.put(f"/memories/{memory_id}", json={"text": "Lives in Lisbon"}).json() == {
        "message": "Memory updated successfully!"}
    assert client.put(f"/memories/{memory_id}", json={}).status_code == 400
    client.put(f"/memories/{memory_id}", json={"metadata": {"k": 1},
                                               "expiration_date": "2999-01-01"})
    item = client.get(f"/memories/{memory_id}").json()
    assert (item["memory"], item["metadata"], item["expiration_date"]) == (
        "Lives in Lisbon", {"k": 1}, "2999-01-01")
    client.put(f"/memories/{memory_id}", json={"expiration_date": None})
    assert "expiration_date" not in client.get(f"/memories/{memory_id}").json()
    found = client.post("/search", json={"query": "Lisbon", "user_id": "carl"}).json()
    assert found["results"][0]["id"] == memory_id  # the new text was re-embedded

    assert client.delete(f"/memories/{memory_id}").json() == {
        "message": "Memory deleted successfully"}
    assert client.get(f"/memories/{memory_id}").status_code == 404
    history = client.get(f"/memories/{memory_id}/history").json()
    assert [h["event"] for h in history] == ["ADD", "UPDATE", "UPDATE", "UPDATE", "DELETE"]
    assert set(history[0]) == {"id", "memory_id", "old_memory", "new_memory", "event",
                               "created_at", "updated_at", "is_deleted", "actor_id", "role"}
    assert (history[1]["old_memory"], history[1]["new_memory"]) == (
        "Lives in Porto", "Lives in Lisbon")
    assert history[-1]["is_deleted"] is True


def test_delete_all_is_never_wider_than_its_filter(client: TestClient, memory: Memory) -> None:
    add(client, "a1", user_id="alice")
    add(client, "a2", user_id="alice", agent_id="bot")
    add(client, "b1", user_id="bob")
    add(client, "b2", user_id="bob", agent_id="bot")
    assert client.delete("/memories").status_code == 400
    response = client.delete("/memories", params={"user_id": "alice", "agent_id": "bot"})
    assert response.json() == {"message": "All relevant memories deleted"}
    assert memory.store.counts() == {"user:alice": 1, "user:bob": 1, "user:bob/agent:bot": 1}
    client.delete("/memories", params={"agent_id": "bot"})
    assert memory.store.counts() == {"user:alice": 1, "user:bob": 1}
    client.delete("/memories", params={"user_id": "bob"})
    assert memory.store.counts() == {"user:alice": 1}


def test_reset_is_journaled(client: TestClient, memory: Memory) -> None:
    add(client, "one", user_id="u1")
    add(client, "two", run_id="r1")
    assert client.post("/reset").json() == {"message": "All memories reset"}
    assert memory.store.total() == 0
    assert [e.op for e in memory.store.journal()] == ["ADD", "ADD", "DELETE", "DELETE"]


def test_entities(client: TestClient, memory: Memory) -> None:
    add(client, "x", user_id="alice", agent_id="bot")
    add(client, "y", user_id="alice")
    add(client, "z", run_id="r9")
    entities = client.get("/entities").json()
    assert {(e["type"], e["id"], e["total_memories"]) for e in entities} == {
        ("user", "alice", 2), ("agent", "bot", 1), ("run", "r9", 1)}
    assert client.delete("/entities/agent/bot").json() == {"message": "Entity deleted"}
    assert memory.store.counts() == {"user:alice": 1, "run:r9": 1}
    assert client.delete("/entities/agent/bot").status_code == 404
    assert client.delete("/entities/planet/bot").status_code == 422


def test_request_id_on_every_response(client: TestClient) -> None:
    responses = [
        client.get("/livez"), client.get("/nowhere"), client.get("/memories/bad"),
        client.post("/memories", json={"messages": "nope"}),
        client.get(f"/memories/{uuid.uuid4()}"),
        client.post("/memories", content=b"{" * (2 * 1024 * 1024)),
    ]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
    echoed = client.get("/livez", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    hostile = client.get("/livez", headers={"X-Request-ID": "a b\x7f" + "x" * 500})
    assert hostile.headers["x-request-id"] != "a b"


def test_request_body_is_size_limited(client: TestClient, memory: Memory) -> None:
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (1024 * 1024)}],
                      "user_id": "a"})
    response = client.post("/memories", content=big,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(20):
            yield b" " * 100_000

    assert client.post("/search", content=chunks(),
                       headers={"Content-Type": "application/json"}).status_code == 413
    assert memory.store.total() == 0


def test_ops_endpoints(client: TestClient, settings: Settings, memory: Memory) -> None:
    add(client, "hello", user_id="alice")
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert [c["name"] for c in ready.json()["checks"]][:2] == ["store", "embedder"]
    status = client.get("/status").json()
    cli = collect_status({"data_dir": settings.data_dir, "database_url": settings.database_url})
    assert status == cli
    assert status["memories"]["namespaces"] == {"user:alice": 1}
    text = client.get("/metrics").text
    key = memory.embedder_identity().key
    store_id = memory.store.meta().store_id
    assert 'memvault_memories{namespace="user:alice"} 1.0' in text
    assert "memvault_memories_unqueryable 0.0" in text
    assert (f'memvault_store_info{{backend="{memory.store.backend}",dims="384",'
            f'embedder="{key}",store_id="{store_id}"}} 1.0') in text
    assert "memvault_embedder_probe_ok 1.0" in text
    assert client.get("/openapi.json").json()["paths"]["/search"]["post"]
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------------------- failures


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return load_settings({"data_dir": tmp_path / "d", "db_timeout": "0.2s",
                          "database_url": f"sqlite:///{tmp_path / 'd' / 'mv.db'}"})


def test_locked_store_is_503_datastore_unavailable(
    sqlite_settings: Settings, local_embedder: LocalEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    with Memory(sqlite_settings, embedder=local_embedder) as memory:
        client = TestClient(app_over(sqlite_settings, memory))
        add(client, "before the lock", user_id="alice")
        blocker = sqlite3.connect(sqlite_settings.sqlite_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            response = client.post("/memories", json={
                "messages": [{"role": "user", "content": "during the lock"}], "user_id": "a"})
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "datastore_unavailable"
        assert body["request_id"] == response.headers["x-request-id"]
        assert "locked" in body["detail"]
        assert body["request_id"] in caplog.text  # logged with its cause
        add(client, "after the lock", user_id="alice")  # the server recovers by itself


def test_failing_embedder_is_502_provider_unavailable(sqlite_settings: Settings) -> None:
    with EmbeddingServer(dims=32) as peer:
        settings = sqlite_settings.model_copy(update={
            "embedder": "openai:emb", "embedder_url": peer.url + "/v1"})
        with Memory(settings) as memory:
            client = TestClient(app_over(settings, memory))
            add(client, "works while the embedder works", user_id="a")
            peer.fail_next = [500, 500, 500]
            response = client.post("/search", json={"query": "q", "user_id": "a"})
            assert response.status_code == 502
            assert response.json()["code"] == "provider_unavailable"
            assert peer.url in response.json()["detail"]


def test_embedder_mismatch_is_503_and_not_ready(
    sqlite_settings: Settings, local_embedder: LocalEmbedder
) -> None:
    with Memory(sqlite_settings, embedder=local_embedder) as memory:
        memory.add("made by the local model", user_id="a", infer=False)
    with EmbeddingServer(dims=32) as peer:
        settings = sqlite_settings.model_copy(update={
            "embedder": "openai:other", "embedder_url": peer.url + "/v1"})
        with Memory(settings) as memory:
            client = TestClient(app_over(settings, memory))
            response = client.post("/search", json={"query": "q", "user_id": "a"})
            assert response.status_code == 503
            assert response.json()["code"] == "embedder_mismatch"
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert [c["name"] for c in ready.json()["failing"]] == ["embedder"]
            assert "memvault_embedder_probe_ok 0.0" in client.get("/metrics").text
            assert client.get("/status").json()["status"] == "CRITICAL"


def test_failing_llm_is_502_and_stores_nothing(
    sqlite_settings: Settings, local_embedder: LocalEmbedder
) -> None:
    with ChatServer(["not json", "still not json"]) as chat:
        settings = sqlite_settings.model_copy(update={"llm": "openai:m",
                                                      "llm_url": chat.url + "/v1"})
        with Memory(settings, embedder=local_embedder) as memory:
            client = TestClient(app_over(settings, memory))
            response = client.post("/memories", json={
                "messages": [{"role": "user", "content": "I am vegetarian"}], "user_id": "a"})
            assert response.status_code == 502
            assert response.json()["code"] == "provider_unavailable"
            assert memory.store.total() == 0
            chat.script(json.dumps({"facts": ["Is vegetarian"]}))
            ok = client.post("/memories", json={
                "messages": [{"role": "user", "content": "I am vegetarian"}], "user_id": "a"})
            assert ok.json()["results"][0] == {**ok.json()["results"][0],
                                               "memory": "Is vegetarian", "event": "ADD"}
            verbatim = client.post("/memories", json={
                "messages": [{"role": "user", "content": "raw"}], "user_id": "a",
                "infer": False})
            assert verbatim.json()["results"][0]["memory"] == "raw"


def test_unexpected_error_is_json_500_with_logged_traceback(
    sqlite_settings: Settings, local_embedder: LocalEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    memory = Memory(sqlite_settings, embedder=local_embedder)
    client = TestClient(app_over(sqlite_settings, memory))
    memory_id = add(client, "soon unreadable", user_id="a")["id"]
    memory.store.close()  # every later store call raises sqlite3.ProgrammingError
    with caplog.at_level(logging.ERROR):
        response = client.get(f"/memories/{memory_id}")
    assert response.status_code == 500
    body = response.json()
    assert body == {"detail": "internal error", "code": "internal_error",
                    "request_id": response.headers["x-request-id"]}
    assert "Traceback" not in response.text
    assert "ProgrammingError" in caplog.text and body["request_id"] in caplog.text
    # The probes report the broken store instead of failing themselves.
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failing"][0]["name"] == "store"
    assert "memvault_store_up 0.0" in client.get("/metrics").text


def test_the_app_mounts_the_backup_and_guard_parts_and_runs_its_runtime(
    settings: Settings, memory: Memory
) -> None:
    from memvault.runtime import Runtime
    from memvault.server.app import create_app

    runtime = Runtime(settings.model_copy(update={"admin_api_key": SecretStr("admin-secret-1")}),
                      memory)
    app = create_app(runtime)
    assert runtime.guard is not None and runtime.scheduler is not None
    assert runtime.guard.verdict is None  # nothing runs before the app starts
    try:
        with TestClient(app) as client:
            assert runtime.guard.verdict is not None  # the first check ran at startup
            assert runtime.scheduler.status()["running"]
            assert client.get("/backups").status_code == 401
            listed = client.get("/backups", headers={"X-API-Key": "admin-secret-1"})
            assert listed.status_code == 200 and listed.json()["scheduler"]["running"]
            ready = client.get("/readyz")
            assert [c["name"] for c in ready.json()["checks"]] == [
                "store", "embedder", "restore", "guard"]
        assert not runtime.scheduler.status()["running"]  # stopped with the app
    finally:
        runtime.close()
