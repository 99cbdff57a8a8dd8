"""`memvault backup ...` / `memvault restore`, `GET|POST /backups` and the backup scheduler."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memvault.backup import (
    VALID,
    BackupScheduler,
    JournalShipper,
    list_backups,
    open_destinations,
    run_restore,
)
from memvault.backup.journal import list_segments
from memvault.cli import app
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.store import open_store
from tests.helpers import backup_folder


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def flat(text: str) -> str:
    """Rich wraps lines at the terminal width; compare words, not layout."""
    return " ".join(text.split())


def _add(cli: CliRunner, text: str, user: str = "alice") -> None:
    out = cli.invoke(app, ["add", text, "--user-id", user])
    assert out.exit_code == 0, out.output


def test_cli_backup_verify_prune_restore(cli: CliRunner, tmp_path: Path) -> None:
    for i in range(4):
        _add(cli, f"alice fact {i}")
    _add(cli, "bob fact", "bob")
    created = cli.invoke(app, ["backup", "create", "--json"])
    assert created.exit_code == 0, created.output
    (result,) = json.loads(created.stdout)["results"]
    assert result["status"] == "valid" and result["counts"] == {"user:alice": 4, "user:bob": 1}
    listed = json.loads(cli.invoke(app, ["backup", "list", "--json"]).stdout)["backups"]
    assert [b["id"] for b in listed] == [result["id"]]
    verified = cli.invoke(app, ["backup", "verify", "--read-data", "--json"])
    assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"]
    plan = cli.invoke(app, ["backup", "prune", "--dry-run", "--json"])
    assert plan.exit_code == 0
    assert json.loads(plan.stdout)["plans"][0]["keep"][0]["id"] == result["id"]
    # Restore: refused into the non-empty live store, planned and done into an empty one.
    refused = cli.invoke(app, ["restore"])
    assert refused.exit_code == 1 and "--yes" in flat(refused.output)
    other = ["--database-url", f"sqlite:///{tmp_path / 'other.db'}"]
    dry = cli.invoke(app, [*other, "restore", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert planned["target_memories"] == 0
    assert planned["plan"]["counts_after_restore"] == {"user:alice": 4, "user:bob": 1}
    assert planned["plan"]["embedder"]["reembed"] is False
    human = cli.invoke(app, [*other, "restore", result["id"]])
    assert human.exit_code == 0, human.output
    assert "restore plan" in human.output and "counts verified" in flat(human.output)
    found = cli.invoke(app, [*other, "search", "fact", "--user-id", "bob", "--json"])
    assert json.loads(found.stdout)["results"][0]["memory"] == "bob fact"
    # A damaged file: verify names it and exits 1.
    folder = backup_folder(tmp_path / "data" / "backups", result["id"])
    (folder / "memories.jsonl.zst").write_bytes(b"garbage")
    broken = cli.invoke(app, ["backup", "verify", "--all"])
    assert broken.exit_code == 1 and "memories.jsonl.zst" in broken.output


def test_cli_create_exits_1_on_a_suspicious_backup(cli: CliRunner) -> None:
    _add(cli, "soon gone")
    assert cli.invoke(app, ["backup", "create"]).exit_code == 0
    out = cli.invoke(app, ["search", "soon gone", "--user-id", "alice", "--json"])
    memory_id = json.loads(out.stdout)["results"][0]["id"]
    from memvault.config import load_settings

    with Memory(load_settings()) as memory:
        memory.delete(memory_id)
    empty = cli.invoke(app, ["backup", "create"])
    assert empty.exit_code == 1
    assert "suspicious" in empty.output and "no valid backup" in flat(empty.output)


def test_cli_bad_retention_policy_and_bad_at(cli: CliRunner,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _add(cli, "x")
    assert cli.invoke(app, ["backup", "create"]).exit_code == 0
    bad_at = cli.invoke(app, ["restore", "--at", "yesterday-ish", "--dry-run"])
    assert bad_at.exit_code == 1 and "ISO-8601" in bad_at.output
    monkeypatch.setenv("MEMVAULT_BACKUP_KEEP", "last=0")
    refused = cli.invoke(app, ["backup", "prune"])
    assert refused.exit_code == 1 and "keep at least one" in flat(refused.output)


def test_http_backups_endpoints(memory: Memory, settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from memvault.server.app import app_over

    memory.add("served memory", user_id="alice", infer=False)
    with TestClient(app_over(settings, memory)) as client:
        created = client.post("/backups")
        assert created.status_code == 200, created.text
        assert created.json()["results"][0]["status"] == "valid"
        listed = client.get("/backups").json()
        assert [b["status"] for b in listed["backups"]] == ["valid"]
        memory.store.set_meta("restore_incomplete", {"backup": "b1", "started_at": "t"})
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "unfinished restore" in ready.text
        memory.store.set_meta("restore_incomplete", None)
        memory.reset()
        suspicious = client.post("/backups")
        assert suspicious.status_code == 502 and "suspicious" in suspicious.text


def _wait(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_scheduler_snapshots_ships_and_final_segment(memory: Memory, settings: Settings,
                                                     tmp_path: Path,
                                                     local_embedder: LocalEmbedder) -> None:
    memory.add("before start", user_id="alice", infer=False)
    quick = settings.model_copy(update={"journal_interval": 0.1, "backup_interval": 3600.0})
    scheduler = BackupScheduler(memory.store, quick)
    dest = open_destinations(quick)[0]
    lineage = memory.store.meta().lineage_id
    scheduler.start()
    try:
        _wait(lambda: any(e.status == VALID for e in list_backups(dest)))  # due at start
        memory.add("shipped by the loop", user_id="alice", infer=False)
        _wait(lambda: bool(list_segments(dest, lineage)))
    finally:
        memory.add("written just before shutdown", user_id="alice", infer=False)
        scheduler.stop()  # ships the final segment
    assert max(r.upto_seq for r in list_segments(dest, lineage)) == memory.store.last_seq()
    assert scheduler.status()["last_results"][0]["status"] == "valid"
    target_settings = quick.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'target.db'}"})
    target = open_store(target_settings)
    try:
        report = run_restore(target, target_settings, local_embedder)
        assert report.counts == {"user:alice": 3}
    finally:
        target.close()


def test_scheduler_does_nothing_unless_leader(memory: Memory, settings: Settings) -> None:
    memory.add("x", user_id="alice", infer=False)
    quick = settings.model_copy(update={"journal_interval": 0.05})
    scheduler = BackupScheduler(memory.store, quick, is_leader=lambda: False)
    scheduler.start()
    time.sleep(0.5)
    scheduler.stop()
    dest = open_destinations(quick)[0]
    assert list_backups(dest) == []
    assert list_segments(dest, memory.store.meta().lineage_id) == []


def test_cli_restore_names_lineages_and_loss(cli: CliRunner, tmp_path: Path) -> None:
    """Two stores back up to one destination: a third refuses to guess and lists both;
    --lineage picks one. A lost segment: exit 1 naming the seqs; --allow-loss restores."""
    prod = ["--database-url", f"sqlite:///{tmp_path / 'prod.db'}"]
    staging = ["--database-url", f"sqlite:///{tmp_path / 'staging.db'}"]
    fresh = ["--database-url", f"sqlite:///{tmp_path / 'fresh.db'}"]
    for who, text in ((prod, "prod fact"), (staging, "staging fact")):
        assert cli.invoke(app, [*who, "add", text, "--user-id", "u"]).exit_code == 0
        assert cli.invoke(app, [*who, "backup", "create"]).exit_code == 0
    refused = cli.invoke(app, [*fresh, "restore"])
    assert refused.exit_code == 1 and "several stores" in flat(refused.output)
    settings = load_settings({"data_dir": tmp_path / "data",
                              "database_url": f"sqlite:///{tmp_path / 'prod.db'}"})
    with Memory(settings, embedder=LocalEmbedder()) as memory:
        lineage = memory.store.meta().lineage_id
        shipper = JournalShipper(memory.store, settings)
        for text in ("shipped 1", "shipped 2", "shipped 3"):
            memory.add(text, user_id="u", infer=False)
            shipper.ship()
        shipper.stop()
    dest = open_destinations(settings)[0]
    middle = list_segments(dest, lineage)[1]
    (tmp_path / "data" / "backups" / middle.key).unlink()
    lost = cli.invoke(app, [*fresh, "restore", "--lineage", lineage])
    assert lost.exit_code == 1, lost.output
    assert f"seqs {middle.after_seq + 1}..{middle.upto_seq}" in flat(lost.output)
    assert "--allow-loss" in flat(lost.output)
    as_json = cli.invoke(app, [*fresh, "restore", "--lineage", lineage, "--json"])
    assert as_json.exit_code == 1
    refusal = json.loads(as_json.stdout)
    assert refusal["error"] == "restore_would_lose_data" and refusal["loss"]["lost"] is True
    done = cli.invoke(app, [*fresh, "restore", "--lineage", lineage, "--allow-loss"])
    assert done.exit_code == 0, done.output
    assert "restored WITH LOSS" in flat(done.output)
