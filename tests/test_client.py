"""MemoryClient against a real uvicorn on 127.0.0.1: same methods and returns as Memory,
errors mapped back to the same classes, and loud failures when the server is not there."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from memvault import MemoryClient
from memvault.cli.app import app as cli
from memvault.config import Settings, load_settings
from memvault.errors import (
    EmbedderError,
    EmbedderMismatch,
    Forbidden,
    InvalidInput,
    NotFound,
    ServerUnreachable,
    Unauthorized,
)
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.keys import create_key
from tests.peers.embedding_server import EmbeddingServer
from tests.peers.live_server import LiveServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def without_ids(value: Any) -> Any:
    """Drop what differs between two otherwise equal runs (ids, timestamps, float noise)."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items()
                if k not in ("id", "memory_id", "created_at", "updated_at")}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    if isinstance(value, float):  # scores: compared with a tolerance below
        return "<float>"
    return value


def floats(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats(v)]
    return [value] if isinstance(value, float) else []


def by_text(listing: dict[str, Any]) -> dict[str, Any]:
    """get_all is newest first; memories added in one call tie on created_at."""
    return {"results": sorted(listing["results"], key=lambda r: r["memory"])}


def scenario(api: Any) -> list[Any]:
    """The same calls against Memory or MemoryClient; returns every result."""
    out: list[Any] = []
    added = api.add([{"role": "user", "content": "I love vegetable pizza"},
                     {"role": "assistant", "content": "Noted", "name": "bot"}],
                    user_id="alice", metadata={"src": "chat"}, infer=False)
    out.append(added)
    first = added["results"][0]["id"]
    out.append(api.add("Lives in Porto", user_id="alice", agent_id="travel"))
    out.append(api.add("I love vegetable pizza", user_id="alice", infer=False))  # duplicate
    out.append(api.get(first))
    out.append(api.get(str(uuid.uuid4())))
    out.append(by_text(api.get_all(user_id="alice")))
    out.append(api.get_all(filters={"user_id": "alice", "agent_id": "travel"}, top_k=5))
    out.append(api.search("pizza", user_id="alice", top_k=2))
    out.append(api.search("Porto", filters={"AND": [{"user_id": "alice"},
                                                    {"agent_id": {"in": ["travel"]}}]},
                          threshold=None, explain=True))
    out.append(api.update(first, text="I love mushroom pizza", metadata={"src": "edit"}))
    out.append(api.update(first, expiration_date="2999-12-31"))
    out.append(api.get(first))
    out.append(api.history(first))
    out.append(api.history(str(uuid.uuid4())))
    out.append(api.delete(first))
    out.append(api.get(first))
    out.append(api.delete_all(user_id="alice", agent_id="travel"))
    out.append(by_text(api.get_all(user_id="alice")))
    out.append(api.reset())
    out.append(by_text(api.get_all(user_id="alice")))
    return out


def test_client_returns_what_memory_returns(
    live_url: str, memory: Memory, tmp_path: Path, local_embedder: Any
) -> None:
    with MemoryClient(live_url) as client:
        remote = scenario(client)
    assert memory.store.total() == 0
    with Memory(load_settings({"data_dir": tmp_path / "local"}), embedder=local_embedder) as m:
        local = scenario(m)
    assert without_ids(remote) == without_ids(local)
    assert floats(remote) == pytest.approx(floats(local), abs=1e-4)  # float32 vs float64
    assert remote[7]["results"][0]["memory"] == "I love vegetable pizza"


def test_errors_map_to_the_same_classes(live_url: str) -> None:
    with MemoryClient(live_url) as client:
        with pytest.raises(NotFound, match="not found"):
            client.delete(str(uuid.uuid4()))
        with pytest.raises(NotFound):
            client.update(str(uuid.uuid4()), text="x")
        with pytest.raises(ValueError, match="user_id, agent_id or run_id"):
            client.add("no namespace")
        with pytest.raises(InvalidInput, match="not a valid UUID"):
            client.get("not-a-uuid")
        with pytest.raises(InvalidInput, match="filters must name"):
            client.search("q", filters={"topic": "x"})
        with pytest.raises(InvalidInput, match="top_k"):
            client.get_all(user_id="a", top_k=5000)


def test_auth_errors(settings: Settings, memory: Memory) -> None:
    app = app_over(settings.model_copy(update={"admin_api_key": SecretStr("adm-key-42")}),
                     memory)
    _, token = create_key(memory.store, user_id="alice")
    with LiveServer(app) as server:
        with MemoryClient(server.url) as anonymous, pytest.raises(Unauthorized,
                                                                  match="Authentication"):
            anonymous.get_all(user_id="alice")
        with MemoryClient(server.url, api_key=token) as scoped:
            scoped.add("mine", user_id="alice")
            with pytest.raises(Forbidden, match="user_id='alice'"):
                scoped.get_all(user_id="bob")
            with pytest.raises(Forbidden, match="Admin role required"):
                scoped.reset()
        with MemoryClient(server.url, api_key="adm-key-42") as admin:
            assert len(admin.get_all(user_id="alice")["results"]) == 1


def test_backend_errors_keep_their_class(tmp_path: Path, local_embedder: Any) -> None:
    settings = load_settings({"data_dir": tmp_path})
    with Memory(settings, embedder=local_embedder) as memory:
        memory.add("made by the local model", user_id="a", infer=False)
    with EmbeddingServer(dims=16) as peer:
        other = load_settings({"data_dir": tmp_path, "embedder": "openai:e",
                               "embedder_url": peer.url + "/v1"})
        with Memory(other) as memory, LiveServer(app_over(other, memory)) as server, \
                MemoryClient(server.url) as client:
            with pytest.raises(EmbedderMismatch, match="HTTP 503") as caught:
                client.search("q", user_id="a")
            assert "request " in str(caught.value)
    with EmbeddingServer(dims=16) as peer:
        fresh = load_settings({"data_dir": tmp_path / "2", "embedder": "openai:e",
                               "embedder_url": peer.url + "/v1"})
        with Memory(fresh) as memory, LiveServer(app_over(fresh, memory)) as server, \
                MemoryClient(server.url) as client:
            client.add("hello", user_id="a")
            peer.fail_next = [500, 500, 500]
            with pytest.raises(EmbedderError, match="HTTP 502"):
                client.search("q", user_id="a")


def test_unreachable_server_names_the_address() -> None:
    port = free_port()
    with MemoryClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ServerUnreachable, match=f"127.0.0.1:{port}"):
            client.search("anything", user_id="a")
        with pytest.raises(ServerUnreachable, match=f"127.0.0.1:{port}"):
            client.add("anything", user_id="a")


def test_cli_url_add_search_status(live_url: str, memory: Memory) -> None:
    runner = CliRunner()
    added = runner.invoke(cli, ["add", "I like green tea", "--user-id", "alice", "--url",
                                live_url, "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["results"][0]["event"] == "ADD"
    assert memory.store.counts() == {"user:alice": 1}
    found = runner.invoke(cli, ["search", "tea", "--user-id", "alice", "--json"],
                          env={"MEMVAULT_URL": live_url})
    assert json.loads(found.output)["results"][0]["memory"] == "I like green tea"
    status = runner.invoke(cli, ["status", "--json", "--url", live_url])
    report = json.loads(status.output)
    assert report["memories"]["namespaces"] == {"user:alice": 1}
    assert status.exit_code == report["exit_code"] == 0


def test_cli_wrong_port_fails_naming_the_address() -> None:
    runner = CliRunner()
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["add", "x", "--user-id", "a"], ["search", "x", "--user-id", "a"]):
        result = runner.invoke(cli, [*command, "--url", url])
        assert result.exit_code == 1
        assert url in result.output.replace("\n", "")
    status = runner.invoke(cli, ["status", "--json", "--url", url])
    assert status.exit_code == 2  # Nagios CRITICAL
    assert url in json.loads(status.output)["checks"][0]["message"]
