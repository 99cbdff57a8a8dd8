"""`memvault preflight`: the incident's change judged before it goes live (exit 2, each
consequence named), an unchanged configuration (exit 0), an unreachable candidate database
(exit 2, host/port/user named, password never shown), and nothing changed by looking."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memvault.backup import create_backup
from memvault.cli import app
from memvault.config import Settings
from memvault.guard.watchdog import Guard
from memvault.memory import Memory
from tests.peers.embedding_server import EmbeddingServer
from tests.test_guard import running

PASSWORD = "Pr0d-s3cret-pw"


def flat(text: str) -> str:
    return " ".join(text.split())


def guarded(memory: Memory, settings: Settings) -> None:
    """A store with data in 3 namespaces, a valid backup and the ledger a server keeps."""
    for user in ("alice", "bob", "carol"):
        for i in range(4):
            memory.add(f"{user} remembers fact {i}", user_id=user, infer=False)
    assert create_backup(memory.store, settings)[0].status == "valid"
    with running(Guard(settings, memory)):
        pass


def tree_digest(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots if root.exists() for p in sorted(root.rglob("*")) if p.is_file()}


def runner_for(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> CliRunner:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", str(settings.database_url))
    return CliRunner()


def test_unchanged_configuration_exits_0(memory: Memory, settings: Settings,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    guarded(memory, settings)
    out = runner_for(monkeypatch, settings).invoke(app, ["preflight", "--json"])
    report = json.loads(out.stdout)
    assert out.exit_code == 0, out.stdout
    assert report["differences"] == [] and report["status"] == "OK"
    assert report["database"]["memories"] == 12 and report["database"]["schema"]


def test_the_incidents_change_exits_2_naming_each_consequence(
        pg_server: Any, tmp_path: Path, local_embedder: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """New user and database, a model with other dimensions, a new port: all at once."""
    from memvault.config import load_settings

    old_db = "mem0_" + uuid.uuid4().hex[:8]
    pg_server.psql(f"CREATE DATABASE {old_db};")
    settings = load_settings({"data_dir": tmp_path / "data",
                              "database_url": pg_server.get_uri(old_db)})
    with Memory(settings, embedder=local_embedder) as memory:
        guarded(memory, settings)
    new_db, new_user = "mem0_prd_" + uuid.uuid4().hex[:6], "mem0_user_" + uuid.uuid4().hex[:6]
    pg_server.psql(f"CREATE ROLE {new_user} LOGIN; CREATE DATABASE {new_db} OWNER {new_user};")
    new_url = pg_server.get_postmaster_info().get_uri(user=new_user, database=new_db) \
        .replace(f"{new_user}:@", f"{new_user}:{PASSWORD}@")
    runner = runner_for(monkeypatch, settings)
    before = tree_digest(tmp_path / "data")
    with EmbeddingServer(dims=48) as server:
        env = tmp_path / "new.env"
        env.write_text(f"MEMVAULT_DATABASE_URL={new_url}\nMEMVAULT_EMBEDDER=openai:nomic\n"
                       f"MEMVAULT_EMBEDDER_URL={server.url}/v1\nMEMVAULT_PORT=8889\n"
                       f"POSTGRES_PASSWORD={PASSWORD}\n")
        out = runner.invoke(app, ["preflight", "--env", str(env)], env={"COLUMNS": "200"})
        as_json = runner.invoke(app, ["preflight", "--env", str(env), "--json"])
    text = flat(out.stdout)
    assert out.exit_code == 2, out.stdout + out.stderr
    assert PASSWORD not in out.stdout + out.stderr + as_json.stdout + as_json.stderr
    assert f"user={new_user}" in text and "reachable; no memvault schema" in text
    assert "the ledger holds lineage" in text and "12 memories in 3 namespaces" in text
    assert "the guard will raise StoreEmpty" in text
    assert "the guard will auto-restore backup" in text
    assert "differs from the store's local:" in text and "re-embeds 12 memories" in text
    assert "listen on 127.0.0.1:8889, not 127.0.0.1:8888" in text
    assert "POSTGRES_PASSWORD" in text  # listed as ignored, its value never shown
    report = json.loads(as_json.stdout)
    assert as_json.exit_code == 2
    changed = {d["key"]: d for d in report["differences"]}
    assert set(changed) >= {"database_url", "embedder", "embedder_url", "port"}
    assert changed["port"]["candidate_source"] == f"candidate env {env} (MEMVAULT_PORT)"
    assert changed["database_url"]["current_source"] == "env MEMVAULT_DATABASE_URL"
    assert report["reembed"]["memories"] == 12 and report["reembed"]["to"].endswith(":48")
    alerts = {c.get("alert") for c in report["checks"]}
    assert {"StoreEmpty", "EmbedderMismatch"} <= alerts
    # Nothing was changed: no file, no schema in the candidate database.
    assert tree_digest(tmp_path / "data") == before
    schema = pg_server.psql(f"\\c {new_db}\nSELECT to_regclass('memvault.meta') IS NULL;")
    assert "t" in schema.split()


def test_unreachable_database_exits_2_naming_what_was_tried(
        memory: Memory, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    guarded(memory, settings)
    url = f"postgresql://mem0_user_prd:{PASSWORD}@127.0.0.1:1/mem0_prd"
    out = CliRunner().invoke(app, ["--data-dir", str(settings.data_dir), "--database-url",
                                   str(settings.database_url), "preflight", "--database-url",
                                   url], env={"COLUMNS": "200"})
    text = flat(out.stdout)
    assert out.exit_code == 2, out.stdout + out.stderr
    assert "host=127.0.0.1 port=1 database=mem0_prd user=mem0_user_prd" in text
    assert "NOT reachable" in text and "password redacted" in text
    assert PASSWORD not in out.stdout + out.stderr


def test_sqlite_candidate_is_never_created_or_written(
        memory: Memory, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    guarded(memory, settings)
    runner = runner_for(monkeypatch, settings)
    before = tree_digest(tmp_path)
    out = runner.invoke(app, ["preflight", "--database-url",
                              f"sqlite:///{tmp_path / 'new' / 'memvault.db'}", "--json"])
    assert out.exit_code == 2, out.stdout
    assert not (tmp_path / "new").exists()
    existing = runner.invoke(app, ["preflight", "--json"])
    assert existing.exit_code == 0
    assert tree_digest(tmp_path) == before  # no -wal/-shm, no ledger record, no backup


def test_config_file_candidate_and_a_bad_value(memory: Memory, settings: Settings,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    guarded(memory, settings)
    runner = runner_for(monkeypatch, settings)
    toml = tmp_path / "candidate.toml"
    toml.write_text('host = "0.0.0.0"\nsearch = "keyword"\n')
    out = runner.invoke(app, ["preflight", "--config", str(toml), "--json"])
    report = json.loads(out.stdout)
    assert out.exit_code == 1, out.stdout  # a new address: review
    assert {d["key"] for d in report["differences"]} == {"host", "search"}
    toml.write_text('port = "not a port"\n')
    bad = runner.invoke(app, ["preflight", "--config", str(toml)])
    assert bad.exit_code == 3 and "port" in bad.stderr


# ------------------------------------------------------------------ drill --config


def test_drill_config_restores_with_the_candidate_embedder_and_reports_the_mismatch(
        memory: Memory, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from memvault.backup import open_destinations
    from memvault.guard.drill import read_drills

    guarded(memory, settings)
    runner = runner_for(monkeypatch, settings)
    candidate = tmp_path / "candidate.toml"
    with EmbeddingServer(dims=48) as server:
        candidate.write_text(f'embedder = "openai:nomic"\nembedder_url = "{server.url}/v1"\n')
        out = runner.invoke(app, ["drill", "--config", str(candidate), "--json"])
        human = runner.invoke(app, ["drill", "--config", str(candidate)],
                              env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["candidate"] == {"backup_embedder": "local:all-MiniLM-L6-v2-q8:384",
                                   "embedder": "openai:nomic:48", "reembedded": True}
    assert report["vectors"] == {"embedder": "openai:nomic:48", "count": 12}
    assert report["sample"]["texts"]["checked"] > 0  # texts embed close to their new vectors
    assert report["database"]["reachable"] and report["record"] is None
    assert "every memory re-embedded" in flat(human.stdout)
    # A candidate's drill says nothing about the running configuration's backups.
    assert read_drills(open_destinations(settings))[0] == []
    with EmbeddingServer(dims=48) as gone:
        dead = f"{gone.url}/v1"
    candidate.write_text(f'embedder = "openai:nomic"\nembedder_url = "{dead}"\n')
    failed = runner.invoke(app, ["drill", "--config", str(candidate), "--json"])
    assert failed.exit_code == 1
    assert dead.removesuffix("/v1") in json.loads(failed.stdout)["error"]


def test_drill_env_with_an_unreachable_database_fails_naming_it(
        memory: Memory, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    guarded(memory, settings)
    runner = runner_for(monkeypatch, settings)
    env = tmp_path / "candidate.env"
    env.write_text(f"MEMVAULT_DATABASE_URL=postgresql://mem0_user_prd:{PASSWORD}@127.0.0.1:1/"
                   "mem0_prd\n")
    out = runner.invoke(app, ["drill", "--env", str(env)])
    assert out.exit_code == 1
    assert "host=127.0.0.1 port=1 database=mem0_prd user=mem0_user_prd" in flat(out.stderr)
    assert PASSWORD not in out.stdout + out.stderr
