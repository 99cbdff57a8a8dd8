"""Safety snapshots before destructive operations (backup/safety.py): each operation leaves a
valid `pre-<operation>` snapshot that the command it names restores byte-exact, a snapshot that
cannot be taken refuses the operation before anything changed, and retention keeps them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memvault.backup import VALID, list_backups, open_destinations, plan_prune
from memvault.cli import app
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.errors import SafetySnapshotFailed
from memvault.memory import Memory
from memvault.migrate.export import export_jsonl
from memvault.store import open_store

TEXTS = [("alice", None, "alice keeps bees"), ("alice", "travel", "alice flies to Lisbon"),
         ("bob", None, "bob repairs bicycles"), ("bob", "music", "bob plays the cello")]


def fill(memory: Memory) -> None:
    for user, agent, text in TEXTS:
        memory.add(text, user_id=user, agent_id=agent, infer=False,
                   metadata={"k": text[:5]})


def exported(settings: Settings, tmp_path: Path, name: str) -> list[bytes]:
    """The memories and their vectors as `memvault export` writes them (no header/trailer,
    which carry the seq and the export time)."""
    out = tmp_path / f"{name}.jsonl"
    store = open_store(settings)
    try:
        export_jsonl(store, out, with_vectors=True)
    finally:
        store.close()
    return out.read_bytes().splitlines()[1:-1]


def tagged(settings: Settings, tag: str) -> list[Any]:
    return [e for e in list_backups(open_destinations(settings)[0])
            if e.manifest and e.manifest.tag == tag]


def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> CliRunner:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", str(settings.database_url))
    return CliRunner()


def undo(runner: CliRunner, snapshot: dict[str, Any]) -> None:
    """Run the command the snapshot names, word for word."""
    words = snapshot["undo"].split()
    assert words[0] == "memvault"
    out = runner.invoke(app, [*words[1:], "--json"])
    assert out.exit_code == 0, out.stdout + out.stderr


def test_reset_leaves_a_pre_reset_snapshot_that_restores_byte_exact(
        memory: Memory, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fill(memory)
    before = exported(settings, tmp_path, "before")
    memory.reset()
    assert memory.store.total() == 0
    (entry,) = tagged(settings, "pre-reset")
    assert entry.status == VALID and entry.manifest.total == len(TEXTS)
    memory.add("written after the reset", user_id="carol", infer=False)  # journaled after
    runner = cli_env(monkeypatch, settings)
    memory.close()
    from memvault.backup.safety import Operation, SafetySnapshot

    snap = SafetySnapshot(Operation.RESET, entry.id, entry.seq, entry.manifest.total,
                          entry.manifest.created_at, [])
    undo(runner, snap.to_json())
    assert exported(settings, tmp_path, "after") == before


def test_delete_all_wider_than_one_namespace_is_snapshotted_first(
        memory: Memory, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fill(memory)
    memory.delete_all(user_id="bob", agent_id="music")  # one namespace: no snapshot
    assert tagged(settings, "pre-delete_all") == []
    before = exported(settings, tmp_path, "before")
    memory.delete_all(user_id="alice")  # user:alice and user:alice/agent:travel
    (entry,) = tagged(settings, "pre-delete_all")
    assert entry.manifest.counts == {"user:alice": 1, "user:alice/agent:travel": 1,
                                     "user:bob": 1}
    runner = cli_env(monkeypatch, settings)
    memory.close()
    out = runner.invoke(app, ["restore", entry.id, "--at", entry.manifest.created_at, "--yes",
                              "--json"])
    assert out.exit_code == 0, out.stdout + out.stderr
    assert exported(settings, tmp_path, "after") == before
    # The restore itself replaced a non-empty store: it took its own safety snapshot first.
    assert json.loads(out.stdout)["safety_snapshot"]["tag"] == "pre-restore"
    assert len(tagged(settings, "pre-restore")) == 1


def test_a_snapshot_that_cannot_be_taken_refuses_the_operation(
        settings: Settings, local_embedder: LocalEmbedder, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backups should go")
    unwritable = settings.model_copy(update={"backup_urls": [str(blocker / "backups")]})
    with Memory(unwritable, embedder=local_embedder) as memory:
        fill(memory)
        with pytest.raises(SafetySnapshotFailed, match="reset refused, nothing was changed") \
                as caught:
            memory.reset()
        assert str(blocker) in caught.value.message and "--no-safety-snapshot" in str(
            caught.value.hint)
        with pytest.raises(SafetySnapshotFailed, match="delete_all refused"):
            memory.delete_all(user_id="alice")
        assert memory.store.total() == len(TEXTS)  # nothing was deleted
        memory.reset(safety_snapshot=False)  # the explicit opt-out goes ahead
        assert memory.store.total() == 0


def test_post_reset_refused_503_when_the_snapshot_fails(
        settings: Settings, local_embedder: LocalEmbedder, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from memvault.server.app import app_over

    blocker = tmp_path / "blocker"
    blocker.write_text("")
    unwritable = settings.model_copy(update={"backup_urls": [str(blocker / "b")]})
    with Memory(unwritable, embedder=local_embedder) as memory, \
            TestClient(app_over(unwritable, memory)) as client:
        fill(memory)
        refused = client.post("/reset")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "safety_snapshot_failed"
        assert memory.store.total() == len(TEXTS)
        assert client.post("/reset", params={"safety_snapshot": "false"}).status_code == 200
        assert memory.store.total() == 0


def test_post_reset_snapshots_through_the_servers_scheduler(client: Any, memory: Memory,
                                                           settings: Settings) -> None:
    fill(memory)
    assert client.post("/reset").status_code == 200
    (entry,) = tagged(settings, "pre-reset")
    assert entry.manifest.total == len(TEXTS)
    listed = client.get("/backups").json()
    assert [b["tag"] for b in listed["backups"]] == ["pre-reset"]


def test_cli_restore_yes_over_a_store_with_data_snapshots_it_and_can_refuse(
        memory: Memory, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fill(memory)
    runner = cli_env(monkeypatch, settings)
    assert runner.invoke(app, ["backup", "create"]).exit_code == 0
    memory.add("newer than the backup", user_id="dave", infer=False)
    before = exported(settings, tmp_path, "before")
    memory.close()
    out = runner.invoke(app, ["restore", "latest", "--yes"])
    assert out.exit_code == 0, out.stdout + out.stderr
    words = " ".join(out.stdout.split())
    assert "safety snapshot" in words and "pre-restore" in words and "to undo" in words
    (entry,) = tagged(settings, "pre-restore")
    assert entry.manifest.total == len(TEXTS) + 1
    # A snapshot that fails in one destination refuses the restore before it changes a thing.
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv("MEMVAULT_BACKUP_URLS",
                       f"{settings.backup_urls[0]},{tmp_path / 'blocked' / 'b'}")
    unchanged = exported(settings, tmp_path, "unchanged")
    refused = runner.invoke(app, ["restore", "latest", "--yes"])
    assert refused.exit_code == 1
    assert "restore refused, nothing was changed" in " ".join(refused.stderr.split())
    assert exported(settings, tmp_path, "refused") == unchanged
    monkeypatch.delenv("MEMVAULT_BACKUP_URLS")
    undone = runner.invoke(app, ["restore", entry.id, "--at", entry.manifest.created_at,
                                 "--yes", "--no-safety-snapshot"])
    assert undone.exit_code == 0, undone.stdout + undone.stderr
    assert exported(settings, tmp_path, "after") == before


def test_adopt_snapshots_the_store_it_adopts(
        backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
        tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memvault.guard.watchdog import Guard
    from tests.test_guard import other_database, running

    fill(memory)
    with running(Guard(settings, memory)):
        pass  # the ledger names this store
    other = other_database(backend, tmp_path, request)
    stranger_settings = load_settings({"data_dir": settings.data_dir, "database_url": other})
    with Memory(stranger_settings, embedder=local_embedder) as stranger:
        stranger.add("another store's memory", user_id="zed", infer=False)
    runner = cli_env(monkeypatch, stranger_settings)
    adopted = runner.invoke(app, ["adopt", "--yes", "--json"])
    assert adopted.exit_code == 0, adopted.stdout + adopted.stderr
    snap = json.loads(adopted.stdout)["safety_snapshot"]
    assert snap["tag"] == "pre-adopt" and snap["memories"] == 1
    (entry,) = tagged(settings, "pre-adopt")
    assert entry.manifest.lineage_id == json.loads(adopted.stdout)["lineage_id"]


def test_retention_keeps_safety_snapshots_for_the_daily_window(
        memory: Memory, settings: Settings) -> None:
    fill(memory)
    memory.reset()
    fill(memory)
    memory.reset()
    fill(memory)
    from memvault.backup import create_backup

    newest = create_backup(memory.store, settings)[0]
    dest = open_destinations(settings)[0]
    safety = {e.id for e in tagged(settings, "pre-reset")}
    assert len(safety) == 2
    plan = plan_prune(dest, {"last": 1})
    assert safety <= set(plan.keep) and newest.id in plan.keep
    assert all("safety snapshot pre-reset" in plan.keep[i][0] for i in safety)
    later = datetime.now(UTC) + timedelta(days=2)  # past a one-day window: ordinary backups
    assert safety <= set(plan_prune(dest, {"last": 1}, now=later).delete)
    assert safety <= set(plan_prune(dest, {"last": 1, "daily": 3}, now=later).keep)


def test_reembed_switch_snapshots_first_and_the_snapshot_restores_the_old_model(
        memory: Memory, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.peers.embedding_server import EmbeddingServer

    fill(memory)
    before = exported(settings, tmp_path, "before")
    old_key = memory.embedder_identity().key
    runner = cli_env(monkeypatch, settings)
    memory.close()
    with EmbeddingServer(dims=48) as server:
        monkeypatch.setenv("MEMVAULT_EMBEDDER_URL", server.url + "/v1")
        done = runner.invoke(app, ["reembed", "--embedder", "openai:test-model", "--yes",
                                   "--json"])
        assert done.exit_code == 0, done.stdout + done.stderr
        snap = json.loads(done.stdout)["safety_snapshot"]
    assert snap["tag"] == "pre-reembed" and snap["memories"] == len(TEXTS)
    (entry,) = tagged(settings, "pre-reembed")
    assert entry.manifest.active_embedder == old_key
    monkeypatch.delenv("MEMVAULT_EMBEDDER_URL")
    undo(runner, snap)  # the configured (old) model: the snapshot's vectors come back as-is
    assert exported(settings, tmp_path, "after") == before


def test_a_restore_over_its_own_lineage_leaves_a_journal_that_replays_to_what_it_restored(
        memory: Memory, settings: Settings, target: Any, local_embedder: LocalEmbedder) -> None:
    """Restoring over a store with data deletes its memories through the journal; the loaded
    memories must be in the journal too, or a later restore from an older backup replays the
    deletes and ends with nothing, its counts "verified" against that same journal."""
    from memvault.backup import JournalShipper, create_backup, run_restore

    fill(memory)
    assert create_backup(memory.store, settings)[0].status == VALID
    run_restore(memory.store, settings, local_embedder, yes=True)  # over its own data
    assert memory.store.total() == len(TEXTS)
    JournalShipper(memory.store, settings, open_destinations(settings)).ship()
    report = run_restore(target, settings, local_embedder)  # the older backup + the journal
    assert target.total() == len(TEXTS), report.to_json()["plan"]["journal"]
