"""`memvault watch mem0` and `restore --to-mem0` against the real mem0 (mem0ai) on the test
PostgreSQL + pgvector: the incident of PRODUCT.md, replayed on a mem0 that memvault guards in
place."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from memvault.backup.catalog import list_backups
from memvault.backup.destinations import open_destinations
from memvault.backup.journal import list_segments
from memvault.config import Settings, load_settings
from memvault.guard.alerts import Alert
from memvault.store import namespace_key
from memvault.watch import Watcher, restore_to_mem0
from memvault.watch.checks import HOLDING
from tests.mem0_real import close, mem0_memory, rows, versions
from tests.peers.embedding_server import EmbeddingServer
from tests.peers.http_peer import HTTPPeer

MODEL = "text-embedding-3-small"


@pytest.fixture
def webhook() -> Iterator[HTTPPeer]:
    peer = HTTPPeer({("POST", "/hook"): lambda body, headers: (200, {})})
    with peer:
        yield peer


def titles(peer: HTTPPeer) -> list[str]:
    return [r["body"].get("title", "") for r in peer.requests]


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def watch_settings(tmp_path: Path, webhook: HTTPPeer, **more: Any) -> Settings:
    return load_settings({"data_dir": tmp_path / "data", "backup_urls": [str(tmp_path / "nas")],
                          "alert_urls": [f"json://127.0.0.1:{webhook.port}/hook"],
                          "journal_interval": "1s", "backup_interval": "24h", **more})


def namespaces(payloads: dict[str, dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(namespace_key(p.get("user_id"), p.get("agent_id"), p.get("run_id"))
                        for p in payloads.values()))


def new_database(pg_server: Any, owner: str | None = None) -> str:
    name = "mem0_" + uuid.uuid4().hex[:10]
    if owner:
        pg_server.psql(f"CREATE ROLE {owner} LOGIN; CREATE DATABASE {name} OWNER {owner};")
    else:
        pg_server.psql(f"CREATE DATABASE {name};")
    pg_server.psql(f"\\c {name}\nCREATE EXTENSION IF NOT EXISTS vector;")
    return pg_server.get_postmaster_info().get_uri(user=owner, database=name) if owner \
        else pg_server.get_uri(name)


def write_three_namespaces(memory: Any) -> None:
    for i in range(6):
        memory.add(f"alice likes hiking trip number {i}", user_id="alice", infer=False)
    for i in range(4):
        memory.add(f"bob prefers green tea with meal {i}", user_id="bob", infer=False)
    for i in range(3):
        memory.add(f"the support agent escalates ticket {i}", agent_id="support",
                   run_id="run-1", infer=False, metadata={"priority": i, "tags": ["a", "b"]})
    memory.add("alice likes hiking trip number 0", user_id="alice", infer=False)  # a twin


def test_the_incident_on_a_guarded_mem0(pg_server: Any, tmp_path: Path,
                                        webhook: HTTPPeer) -> None:
    old_dsn = new_database(pg_server)
    settings = watch_settings(tmp_path, webhook)
    with EmbeddingServer(dims=1536) as hosted, EmbeddingServer(dims=768) as local:
        mem0 = mem0_memory(old_dsn, hosted.url, 1536, tmp_path / "history.db")
        try:
            write_three_namespaces(mem0)
            before_watch = versions(old_dsn)
            watcher = Watcher(settings, old_dsn, tick_seconds=0.3)
            watcher.start()
            try:
                dest = open_destinations(settings)[0]
                wait_for("a valid snapshot", lambda: any(e.valid for e in list_backups(dest)))
                # Read-only towards mem0: not one row version moved under the watcher.
                assert versions(old_dsn) == before_watch
                assert watcher.store.total() == 14
                # mem0 goes on: an add, an update, a delete; the watcher ships them.
                late = mem0.add("bob switched to oolong tea", user_id="bob", infer=False)
                late_id = late["results"][0]["id"]
                some_alice = next(i for i, p in rows(old_dsn).items()
                                  if p["data"] == "alice likes hiking trip number 3")
                mem0.update(some_alice, "alice likes hiking in the Alps")
                gone = next(i for i, p in rows(old_dsn).items()
                            if p["data"] == "bob prefers green tea with meal 2")
                mem0.delete(gone)
                lineage = watcher.store.meta().lineage_id
                wait_for("the changes shipped", lambda: watcher.store.get(late_id) is not None
                         and max((r.upto_seq for r in list_segments(dest, lineage)),
                                 default=0) >= watcher.store.last_seq() >= 3)
                guarded = rows(old_dsn)
                assert watcher.store.get(gone) is None
                # Truncated under the watcher: StoreEmpty within 30 s, the mirror kept.
                with psycopg.connect(old_dsn, autocommit=True) as conn:
                    conn.execute("TRUNCATE memories")
                took = wait_for("StoreEmpty at the webhook", lambda: any(
                    t.startswith("[FIRING] StoreEmpty") for t in titles(webhook)))
                assert took < 30
                assert watcher.store.total() == len(guarded)
            finally:
                watcher.stop()
                watcher.close()
        finally:
            close(mem0)

        # mem0 recreated: a new database under new credentials, a 768-dim local model.
        user = "app_" + uuid.uuid4().hex[:8]
        new_dsn = new_database(pg_server, owner=user)
        moved = mem0_memory(new_dsn, local.url, 768, tmp_path / "history2.db")
        try:
            # ... and answers "no memories" (its first read creates its empty table).
            assert moved.get_all(filters={"user_id": "alice"})["results"] == []
            webhook.requests.clear()
            restarted = Watcher(settings, new_dsn, tick_seconds=0.3)
            try:
                verdict = restarted.check()  # the watcher's start: before anything else
                firing = {f.alert for f in verdict.firing()}
                assert {Alert.StoreReplaced, Alert.StoreEmpty, Alert.EmbedderMismatch} <= firing
                sent = titles(webhook)
                for name in ("StoreReplaced", "StoreEmpty", "EmbedderMismatch"):
                    assert any(t.startswith(f"[FIRING] {name}") for t in sent), sent
                assert restarted.hold() is not None  # no backup of the empty table

                # One command puts every memory back, re-embedded by mem0's new model.
                fixed = load_settings({**settings.model_dump(), "embedder": f"openai:{MODEL}",
                                       "embedder_url": f"{local.url}/v1"})
                report = restore_to_mem0(fixed, new_dsn, "memories")
                assert report.reembedded == len(guarded) and report.dims == 768
                assert rows(new_dsn) == guarded  # ids and payloads as mem0 wrote them
                assert report.counts == dict(sorted(namespaces(guarded).items()))
                # mem0's own reads agree: get_all per namespace and search.
                for entity, count in (({"user_id": "alice"}, 7), ({"user_id": "bob"}, 4),
                                      ({"agent_id": "support", "run_id": "run-1"}, 3)):
                    assert len(moved.get_all(filters=entity, top_k=100)["results"]) == count
                found = moved.search("bob switched to oolong tea", filters={"user_id": "bob"},
                                     top_k=3)["results"]
                assert found and found[0]["id"] == late_id
                # The watcher accepts the restored table (the ledger says so): all clear.
                verdict = restarted.check()
                assert not [f for f in verdict.firing() if f.alert in HOLDING], verdict
                assert restarted.store.meta().active_embedder == "mem0:memories:768"
            finally:
                restarted.close()
        finally:
            close(moved)


def test_wrong_credentials_are_unreachable_and_say_what_was_tried(
        pg_server: Any, tmp_path: Path, webhook: HTTPPeer,
        caplog: pytest.LogCaptureFixture) -> None:
    info = pg_server.get_postmaster_info()
    wrong = f"postgresql://nobody:Pa55-{uuid.uuid4().hex[:6]}@127.0.0.1:{info.port}/nowhere"
    secret = wrong.split(":")[2].split("@")[0]
    watcher = Watcher(watch_settings(tmp_path, webhook), wrong)
    try:
        verdict = watcher.check()
    finally:
        watcher.close()
    [finding] = verdict.firing()
    assert finding.alert == Alert.StoreUnreachable
    assert "user=nobody" in finding.summary and "database=nowhere" in finding.summary
    assert any(t.startswith("[FIRING] StoreUnreachable") for t in titles(webhook))
    logged = caplog.text + str(webhook.requests)
    assert "user=nobody" in caplog.text and secret not in logged


def test_restore_to_mem0_creates_its_table_keeps_vectors_and_refuses_a_full_one(
        pg_server: Any, tmp_path: Path, webhook: HTTPPeer) -> None:
    """Same dimension: the backup's vectors go back byte for byte (no embedder needed for
    them); the journal's later memories are embedded by the configured model, which is
    mem0's; a missing table is made as mem0 makes it; a table with rows needs --yes."""
    from typer.testing import CliRunner

    from memvault.cli import app

    source = new_database(pg_server)
    settings = watch_settings(tmp_path, webhook)
    with EmbeddingServer(dims=1536) as hosted:
        mem0 = mem0_memory(source, hosted.url, 1536, tmp_path / "h1.db")
        try:
            write_three_namespaces(mem0)
            watcher = Watcher(settings, source, tick_seconds=0.3)
            watcher.start()
            try:
                dest = open_destinations(settings)[0]
                wait_for("a valid snapshot", lambda: any(e.valid for e in list_backups(dest)))
                added = mem0.add("carol keeps bees on the roof", user_id="carol", infer=False)
                wait_for("shipped", lambda: max((r.upto_seq for r in list_segments(
                    dest, watcher.store.meta().lineage_id)), default=0) >= 1)
            finally:
                watcher.stop()
                watcher.close()
        finally:
            close(mem0)
        wanted = rows(source)
        with psycopg.connect(source) as conn:
            vectors = {str(i): v for i, v in conn.execute(
                "SELECT id, vector::text FROM memories").fetchall()}

        target = new_database(pg_server)
        env = {"MEMVAULT_DATA_DIR": str(tmp_path / "data"),
               "MEMVAULT_BACKUP_URLS": str(tmp_path / "nas"),
               "MEMVAULT_EMBEDDER": f"openai:{MODEL}", "MEMVAULT_EMBEDDER_URL": f"{hosted.url}/v1"}
        runner = CliRunner()
        plan = runner.invoke(app, ["restore", "latest", "--to-mem0", target, "--dry-run",
                                   "--json"], env=env)
        assert plan.exit_code == 0, plan.output
        assert json.loads(plan.output)["plan"]["total_after_restore"] == len(wanted)
        with psycopg.connect(target) as conn:  # a dry run writes nothing, not even a table
            assert conn.execute("SELECT to_regclass('memories')").fetchone()[0] is None
        done = runner.invoke(app, ["restore", "latest", "--to-mem0", target, "--json"], env=env)
        assert done.exit_code == 0, done.output
        assert rows(target) == wanted
        with psycopg.connect(target) as conn:
            restored = {str(i): v for i, v in conn.execute(
                "SELECT id, vector::text FROM memories").fetchall()}
            indexes = {r[0] for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'memories'").fetchall()}
        assert restored == vectors  # the snapshot's byte for byte, the journal's re-made alike
        assert {"memories_hnsw_idx", "memories_text_lemmatized_idx"} <= indexes
        again = mem0_memory(target, hosted.url, 1536, tmp_path / "h2.db")
        try:
            found = again.search("carol keeps bees on the roof", filters={"user_id": "carol"},
                                 top_k=1)["results"]
            assert found[0]["id"] == added["results"][0]["id"]
            assert len(again.get_all(filters={"user_id": "alice"}, top_k=100)["results"]) == 7
        finally:
            close(again)

        refused = runner.invoke(app, ["restore", "latest", "--to-mem0", target], env=env)
        assert refused.exit_code == 1 and "--yes" in refused.output
        replaced = runner.invoke(app, ["restore", "latest", "--to-mem0", target, "--yes",
                                       "--json"], env=env)
        assert replaced.exit_code == 0, replaced.output
        assert rows(target) == wanted


def test_the_watcher_reads_with_select_alone_and_cannot_write(
        pg_server: Any, tmp_path: Path, webhook: HTTPPeer) -> None:
    dsn = new_database(pg_server)
    with EmbeddingServer(dims=64) as peer:
        mem0 = mem0_memory(dsn, peer.url, 64, tmp_path / "h.db")
        try:
            write_three_namespaces(mem0)
        finally:
            close(mem0)
    role = "watcher_" + uuid.uuid4().hex[:6]
    database = conninfo_to_dict(dsn)["dbname"]
    pg_server.psql(f"CREATE ROLE {role} LOGIN; \\c {database}\n"
                   f"GRANT SELECT ON memories TO {role};")
    reader = pg_server.get_postmaster_info().get_uri(user=role, database=database)
    watcher = Watcher(watch_settings(tmp_path, webhook), reader)
    try:
        verdict = watcher.check()
        assert not verdict.firing(), verdict
        assert watcher.store.total() == 14
        with pytest.raises(psycopg.Error, match="read-only"):
            watcher.table._connection().execute("DELETE FROM memories")
    finally:
        watcher.close()
    assert len(rows(dsn)) == 14
