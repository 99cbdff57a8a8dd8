"""Auth: admin key, namespace-scoped keys (isolation on every route), key management,
the loopback rule, and secrets kept out of responses and logs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from memvault.cli.app import app as cli
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.errors import ConfigError
from memvault.memory import Memory
from memvault.server import run_server
from memvault.server.app import app_over
from memvault.server.keys import create_key, list_keys, revoke_key, token_hash
from memvault.server.run import check_bind, is_loopback

ADMIN = "admin-key-0123456789abcdef"
AUTH_REQUIRED = {"detail": "Authentication required. Provide a Bearer token or X-API-Key header."}
INVALID = {"detail": "Invalid API key."}
ADMIN_ONLY = {"detail": "Admin role required."}


@pytest.fixture
def secured(settings: Settings, memory: Memory) -> Iterator[TestClient]:
    app = app_over(settings.model_copy(update={"admin_api_key": SecretStr(ADMIN)}), memory)
    with TestClient(app) as client:
        yield client


def as_admin() -> dict[str, str]:
    return {"X-API-Key": ADMIN}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add(client: TestClient, text: str, headers: dict[str, str], **ids: Any) -> str:
    response = client.post("/memories", headers=headers, json={
        "messages": [{"role": "user", "content": text}], **ids})
    assert response.status_code == 200, response.text
    return str(response.json()["results"][0]["id"])


def test_admin_key_is_required_with_mem0_bodies(secured: TestClient) -> None:
    response = secured.get("/memories", params={"user_id": "a"})
    assert (response.status_code, response.json()) == (401, AUTH_REQUIRED)
    wrong = secured.get("/memories", params={"user_id": "a"}, headers={"X-API-Key": "nope"})
    assert (wrong.status_code, wrong.json()) == (401, INVALID)
    assert secured.get("/memories", params={"user_id": "a"},
                       headers=bearer("nope")).json() == INVALID
    assert secured.get("/memories", params={"user_id": "a"}, headers=as_admin()).status_code == 200
    assert secured.get("/memories", params={"user_id": "a"}, headers=bearer(ADMIN)).status_code \
        == 200
    # Probes stay open for load balancers and orchestrators.
    assert secured.get("/livez").status_code == 200
    assert secured.get("/readyz").status_code == 200
    assert secured.get("/metrics").status_code == 401
    assert secured.get("/status").status_code == 401


def test_scoped_key_is_confined_to_its_namespace(secured: TestClient, memory: Memory) -> None:
    key, token = create_key(memory.store, user_id="alice")
    me = bearer(token)
    bob_id = add(secured, "Bob's secret plan", as_admin(), user_id="bob")
    bob_agent = add(secured, "Bob's agent note", as_admin(), user_id="bob", agent_id="bot")
    mine = add(secured, "Alice likes tea", me)  # the scope fills in user_id
    add(secured, "Alice likes green tea", me, user_id="alice", agent_id="bot")
    assert memory.get(mine)["user_id"] == "alice"

    # Writing into another namespace.
    response = secured.post("/memories", headers=me, json={
        "messages": [{"role": "user", "content": "x"}], "user_id": "bob"})
    assert response.status_code == 403
    assert "alice" in response.json()["detail"] and "bob" not in response.json()["detail"]

    # Reading, changing, deleting another user's memory: not found, existence not revealed.
    unknown = str(uuid.uuid4())
    for memory_id in (bob_id, bob_agent):
        for call in (
            lambda i: secured.get(f"/memories/{i}", headers=me),
            lambda i: secured.put(f"/memories/{i}", headers=me, json={"text": "pwned"}),
            lambda i: secured.delete(f"/memories/{i}", headers=me),
            lambda i: secured.get(f"/memories/{i}/history", headers=me),
        ):
            denied, missing = call(memory_id), call(unknown)
            assert denied.status_code == missing.status_code == 404
            assert denied.json()["detail"].replace(memory_id, "X") == \
                missing.json()["detail"].replace(unknown, "X")

    # Listing and searching another user.
    assert secured.get("/memories", params={"user_id": "bob"}, headers=me).status_code == 403
    listed = secured.get("/memories", headers=me).json()["results"]
    assert {r["user_id"] for r in listed} == {"alice"} and len(listed) == 2
    assert secured.post("/search", headers=me, json={
        "query": "secret plan", "filters": {"user_id": "bob"}}).status_code == 403
    assert secured.post("/search", headers=me, json={
        "query": "secret plan", "user_id": "bob"}).status_code == 403
    sneaky = secured.post("/search", headers=me, json={"query": "secret plan", "filters": {
        "OR": [{"user_id": "bob"}, {"agent_id": "bot"}]}, "threshold": 0})
    assert sneaky.status_code == 200
    assert {r["user_id"] for r in sneaky.json()["results"]} == {"alice"}
    assert secured.get("/memories", headers=me, params={
        "filters": json.dumps({"OR": [{"user_id": "bob"}, {"agent_id": "bot"}]})}
    ).json()["results"][0]["user_id"] == "alice"

    # delete_all and entities of another user; admin-only routes.
    assert secured.delete("/memories", params={"user_id": "bob"}, headers=me).status_code == 403
    assert secured.delete("/memories", headers=me).status_code == 400
    assert secured.delete("/entities/user/bob", headers=me).json() == ADMIN_ONLY
    assert secured.post("/reset", headers=me).json() == ADMIN_ONLY
    assert secured.get("/configure", headers=me).json() == ADMIN_ONLY
    assert secured.get("/status", headers=me).status_code == 403
    assert secured.get("/metrics", headers=me).status_code == 403
    entities = secured.get("/entities", headers=me).json()
    assert {(e["type"], e["id"], e["total_memories"]) for e in entities} == {
        ("user", "alice", 2), ("agent", "bot", 1)}
    assert memory.store.counts()["user:bob"] == 1
    assert memory.store.counts()["user:bob/agent:bot"] == 1

    # Its own memories work, and the journal names the key.
    assert secured.put(f"/memories/{mine}", headers=me, json={"text": "Alice loves tea"}
                       ).status_code == 200
    history = secured.get(f"/memories/{mine}/history", headers=me).json()
    assert [h["event"] for h in history] == ["ADD", "UPDATE"]
    assert {e.actor for e in memory.store.history(mine)} == {f"api:key:{key.id}"}
    assert secured.delete(f"/memories/{mine}", headers=me).status_code == 200
    assert secured.get(f"/memories/{mine}/history", headers=me).status_code == 200
    assert secured.delete("/memories", params={"agent_id": "bot"}, headers=me).status_code == 200
    assert memory.store.counts() == {"user:bob": 1, "user:bob/agent:bot": 1}  # bob untouched


def test_revoked_key_is_refused_at_once(secured: TestClient, memory: Memory) -> None:
    key, token = create_key(memory.store, agent_id="bot", label="ci")
    assert secured.get("/memories", headers={"X-API-Key": token}).status_code == 200
    revoke_key(memory.store, key.id)
    assert secured.get("/memories", headers={"X-API-Key": token}).json() == INVALID
    forged = token[:-4] + "AAAA"
    assert secured.get("/memories", headers={"X-API-Key": forged}).json() == INVALID


def test_keys_are_stored_hashed(memory: Memory) -> None:
    key, token = create_key(memory.store, user_id="u")
    raw = json.dumps(memory.store.get_meta("api_keys"))
    assert token not in raw and token_hash(token) in raw
    assert [k.id for k in list_keys(memory.store)] == [key.id]
    with pytest.raises(ValueError, match="at least one"):
        create_key(memory.store)


def test_open_mode_on_loopback(client: TestClient, memory: Memory) -> None:
    assert client.get("/memories").status_code == 200  # no admin key configured: open
    _, token = create_key(memory.store, user_id="alice")
    add(client, "bob's", {}, user_id="bob")
    # A scoped key still confines, and a wrong key is an error rather than silently admin.
    assert client.get("/memories", params={"user_id": "bob"}, headers=bearer(token)
                      ).status_code == 403
    assert client.get("/memories", headers=bearer("stale-key")).json() == INVALID


def test_keys_cli_create_list_revoke(secured: TestClient, settings: Settings) -> None:
    runner = CliRunner()
    base = ["--database-url", str(settings.database_url), "--data-dir", str(settings.data_dir)]
    created = runner.invoke(cli, [*base, "keys", "create", "--user-id", "alice", "--json"])
    assert created.exit_code == 0, created.output
    info = json.loads(created.output)
    assert info["scope"] == {"user_id": "alice"} and info["token"].startswith("mvk_")
    assert secured.get("/memories", headers=bearer(info["token"])).status_code == 200
    listed = runner.invoke(cli, [*base, "keys", "list"])
    assert info["id"] in listed.output and info["token"] not in listed.output
    assert "hash" not in runner.invoke(cli, [*base, "keys", "list", "--json"]).output
    revoked = runner.invoke(cli, [*base, "keys", "revoke", info["id"]])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert secured.get("/memories", headers=bearer(info["token"])).json() == INVALID
    assert runner.invoke(cli, [*base, "keys", "revoke", "nope"]).exit_code == 1
    unscoped = runner.invoke(cli, [*base, "keys", "create"])
    assert unscoped.exit_code == 1 and "--user-id" in unscoped.output
    human = runner.invoke(cli, [*base, "keys", "create", "--run-id", "r1"])
    assert "only time the key is shown" in human.output


def test_refuses_non_loopback_without_admin_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.8.0.1"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        assert not is_loopback(host)
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        run_server({"host": "0.0.0.0", "data_dir": tmp_path})
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "serve", "--host",
                                      "0.0.0.0"])
    assert result.exit_code == 1 and "MEMVAULT_ADMIN_API_KEY" in result.output
    check_bind("0.0.0.0", admin_key_set=True)  # allowed with a key
    with caplog.at_level(logging.WARNING):
        check_bind("127.0.0.1", admin_key_set=False)
    assert "open" in caplog.text


def test_secrets_never_in_configure_errors_or_logs(
    tmp_path: Path, local_embedder: LocalEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = {"admin": "adm-s3cret-key-999", "llm": "sk-llm-s3cret", "emb": "sk-emb-s3cret",
               "url": "urlpass-s3cret"}
    settings = load_settings({
        "data_dir": tmp_path, "admin_api_key": secrets["admin"], "llm": "openai:m",
        # An unreachable LLM whose URL carries credentials: they must not leak in the error.
        "llm_url": f"http://user:{secrets['url']}@127.0.0.1:9/v1",
        "llm_api_key": secrets["llm"], "embedder_api_key": secrets["emb"],
        "alert_urls": "tgram://bottoken-s3cret/chat"})
    with Memory(settings, embedder=local_embedder) as memory:
        client = TestClient(app_over(settings, memory))
        _key, token = create_key(memory.store, user_id="u")
        with caplog.at_level(logging.DEBUG):
            config = client.get("/configure", headers=as_admin_key(secrets["admin"]))
            failed = client.post("/memories", headers=bearer(token), json={
                "messages": [{"role": "user", "content": "I am vegetarian"}]})
            client.get("/memories", headers=bearer(token + "x"))
    assert config.status_code == 200
    assert config.json()["admin_api_key"] == "***"
    assert failed.status_code == 502 and failed.json()["code"] == "provider_unavailable"
    assert "127.0.0.1:9" in failed.json()["detail"]
    seen = config.text + failed.text + caplog.text
    for secret in [*secrets.values(), "bottoken-s3cret", token]:
        assert secret not in seen


def as_admin_key(value: str) -> dict[str, str]:
    return {"X-API-Key": value}
