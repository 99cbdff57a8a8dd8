"""PRODUCT.md's acceptance story, replayed with real processes: `memvault serve` on PostgreSQL
with a 1536-dim OpenAI-compatible embedder, memories written over REST, backups and journal
shipped to a "NAS" folder; then the database is recreated under a new user and name and the
embedder switched to a 768-dim Ollama one. With no human action the new server must refuse
(503), alert, restore the newest valid backup plus the shipped journal, re-embed, and serve the
same memories; later backups are valid and no valid backup was pruned; a script pointed at the
old port fails naming the address it tried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers.embedding_server import EmbeddingServer
from tests.peers.http_peer import HTTPPeer
from tests.test_server_cli import free_port

NAMESPACES = ("alice", "bob", "carol")
PER_NAMESPACE = 650  # ~2,000 memories in all, as in the incident


class SlowEmbeddingServer(EmbeddingServer):
    """A model that takes its time, so the window in which the server must refuse is wide
    enough to observe."""

    def __init__(self, dims: int, delay: float) -> None:
        super().__init__(dims)
        for key, route in list(self.routes.items()):
            self.routes[key] = self._slowed(route, delay)

    @staticmethod
    def _slowed(route: Any, delay: float) -> Any:
        def slow(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
            time.sleep(delay)
            return route(body, headers)  # type: ignore[no-any-return]

        return slow


def serve(port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MEMVAULT_")}
    environment.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "memvault", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_listening(process: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0][-3000:]
        try:
            if httpx.get(f"{url}/livez", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("memvault serve did not start listening")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.fixture
def webhook() -> Iterator[HTTPPeer]:
    with HTTPPeer({("POST", "/hook"): lambda body, headers: (200, {"ok": True})}) as peer:
        yield peer


def test_the_incident_is_detected_alerted_and_repaired_without_a_human(
    pg_server: Any, tmp_path: Path, webhook: HTTPPeer,
) -> None:
    original_db = "mem0_" + uuid.uuid4().hex[:8]
    pg_server.psql(f"CREATE DATABASE {original_db};")
    nas = tmp_path / "nas" / "memvault-backups"
    common = {"MEMVAULT_DATA_DIR": str(tmp_path / "data"), "MEMVAULT_BACKUP_URLS": str(nas),
              "MEMVAULT_ALERT_URLS": f"json://127.0.0.1:{webhook.port}/hook",
              "MEMVAULT_JOURNAL_INTERVAL": "1s", "MEMVAULT_BACKUP_INTERVAL": "24h"}

    with EmbeddingServer(dims=1536) as openai, SlowEmbeddingServer(768, 0.3) as ollama:
        # -- before: PostgreSQL + a 1536-dim hosted model, ~2,000 memories over REST
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        first = serve(port, {**common, "MEMVAULT_DATABASE_URL": pg_server.get_uri(original_db),
                             "MEMVAULT_EMBEDDER": "openai:text-embedding-3-small",
                             "MEMVAULT_EMBEDDER_URL": f"{openai.url}/v1"})
        try:
            wait_until_listening(first, url)
            with httpx.Client(base_url=url, timeout=60) as http:
                for user in NAMESPACES:
                    for start in range(0, PER_NAMESPACE, 130):
                        messages = [{"role": "user", "content": f"{user} remembers fact "
                                     f"number {i} about topic {i % 17}"}
                                    for i in range(start, start + 130)]
                        response = http.post("/memories", json={
                            "messages": messages, "user_id": user, "infer": False})
                        assert response.status_code == 200, response.text
                backup = http.post("/backups")
                assert backup.status_code == 200, backup.text  # valid at the NAS
                # Written after the nightly backup: only the shipped journal has these.
                for i in range(12):
                    http.post("/memories", json={
                        "messages": [{"role": "user", "content": f"late note {i} for bob"}],
                        "user_id": "bob", "infer": False}).raise_for_status()
                before = http.get("/status").json()["memories"]["namespaces"]
                time.sleep(2.5)  # a journal interval or two: the late notes are shipped
        finally:
            stop(first)
        assert sum(before.values()) == 3 * PER_NAMESPACE + 12

        # -- the containers are recreated: new user, new database, a 768-dim local model
        new_db = "mem0_new_" + uuid.uuid4().hex[:8]
        new_user = "app_" + uuid.uuid4().hex[:8]
        pg_server.psql(f"CREATE ROLE {new_user} LOGIN; CREATE DATABASE {new_db} OWNER "
                       f"{new_user};")
        recreated_url = pg_server.get_postmaster_info().get_uri(user=new_user, database=new_db)
        # pgvector needs a superuser to install; an operator's init script would do this.
        pg_server.psql(f"\\c {new_db}\nCREATE EXTENSION IF NOT EXISTS vector;")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        second = serve(port, {**common, "MEMVAULT_DATABASE_URL": recreated_url,
                              "MEMVAULT_EMBEDDER": "ollama:nomic-embed-text",
                              "MEMVAULT_EMBEDDER_URL": ollama.url})
        try:
            wait_until_listening(second, url)
            seen: list[int] = []
            with httpx.Client(base_url=url, timeout=60) as http:
                while time.monotonic() - started < 120:
                    seen.append(http.get("/readyz").status_code)
                    if seen[-1] == 200:
                        break
                    time.sleep(0.1)
                assert seen[0] == 503 and seen[-1] == 200, seen
                titles = [r["body"].get("title", "") for r in webhook.requests]
                for alert in ("StoreEmpty", "StoreReplaced", "EmbedderMismatch"):
                    assert any(t.startswith(f"[FIRING] {alert}") for t in titles), titles
                    assert any(t.startswith(f"[RESOLVED] {alert}") for t in titles), titles

                after = http.get("/status").json()
                assert after["memories"]["namespaces"] == before  # the late notes included
                assert after["embedders"]["active"] == "ollama:nomic-embed-text:768"
                assert after["status"] == "OK", after["checks"]
                found = http.post("/search", json={
                    "query": "bob remembers fact number 42 about topic 8", "user_id": "bob",
                    "top_k": 1}).json()["results"]
                assert found[0]["memory"] == "bob remembers fact number 42 about topic 8"
                late = http.post("/search", json={"query": "late note 11 for bob",
                                                  "user_id": "bob", "top_k": 1}).json()
                assert late["results"][0]["memory"] == "late note 11 for bob"

                again = http.post("/backups")
                assert again.status_code == 200, again.text  # later backups are valid
                listed = http.get("/backups").json()["backups"]
                assert backup.json()["results"][0]["id"] in {b["id"] for b in listed}
                assert all(b["status"] == "valid" for b in listed
                           if b["id"] in {backup.json()["results"][0]["id"],
                                          again.json()["results"][0]["id"]})
        finally:
            output = stop(second)
        assert "automatic restore done" in output

    # -- a sync script still pointed at the old server's port fails loudly
    stale = subprocess.run(
        [sys.executable, "-m", "memvault", "search", "fact", "--user-id", "bob", "--url",
         f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("MEMVAULT_")})
    assert stale.returncode != 0
    assert "127.0.0.1:" in stale.stderr
