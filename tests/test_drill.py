"""Restore drills (`memvault drill`, the scheduled DrillJob, DrillFailed, the success gauge)
against real stores on every backend, real backup files and a real webhook receiver."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard
from typer.testing import CliRunner

from memvault.backup import JournalShipper, create_backup, open_destinations
from memvault.backup.destinations import LocalDestination
from memvault.backup.format import manifest_digest
from memvault.cli import app
from memvault.config import Settings, load_settings
from memvault.guard.api import Guard
from memvault.guard.drill import METRIC, read_drills, run_drill
from memvault.guard.drill_job import DrillJob
from memvault.memory import Memory
from tests.helpers import backup_folder
from tests.peers.http_peer import HTTPPeer


def fill(memory: Memory) -> None:
    for user in ("alice", "bob"):
        memory.add([{"role": "user", "content": f"{user} note {i}"} for i in range(12)],
                   user_id=user, infer=False)
    # The same text in two namespaces: two memories with identical vectors.
    for user in ("alice", "bob"):
        memory.add("the boat is moored at pier 9", user_id=user, infer=False)


def backup(memory: Memory, settings: Settings) -> str:
    (result,) = create_backup(memory.store, settings)
    assert result.status == "valid", result.reasons
    return str(result.id)


def damage(settings: Settings, backup_id: str, name: str) -> None:
    """Flip one byte in the middle of a backup file (same size: only a full read can tell)."""
    path = backup_folder(settings.backup_urls[0], backup_id) / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def scratch_dirs(settings: Settings) -> list[Path]:
    return list((Path(settings.data_dir) / "tmp").glob("drill-*"))


def live_state(memory: Memory) -> tuple[Any, ...]:
    store = memory.store
    return (store.counts(), store.last_seq(), store.vector_counts(), store.meta().store_id,
            store.get_meta("restored_from"))


# ------------------------------------------------------------------ run_drill


def test_a_good_backup_drills_ok_records_it_and_leaves_the_live_store_alone(
    settings: Settings, memory: Memory, local_embedder: Any,
) -> None:
    fill(memory)
    backup_id = backup(memory, settings)
    memory.add("written after the backup", user_id="alice", infer=False)
    memory.delete(memory.get_all(user_id="bob")["results"][0]["id"])
    assert JournalShipper(memory.store, settings).ship() > 0
    before = live_state(memory)

    report = run_drill(settings, embedder=local_embedder)

    assert report.ok, report.error
    assert report.reason is None and report.error is None
    assert report.newest and report.restored and report.restored["id"] == backup_id
    assert report.fallbacks == []
    assert report.journal["replayed"] == 2 and report.journal["embedded"] == 1
    assert report.counts == memory.store.counts() == report.expected_counts
    assert report.vectors == {"embedder": memory.store.meta().active_embedder,
                              "count": sum(report.counts.values())}
    assert report.sample["checked"] == report.total == 26
    assert report.sample["found_first"] == 26
    assert report.sample["texts"]["checked"] == 5 and report.sample["texts"]["far"] == []
    assert report.sample["texts"]["min_similarity"] > 0.99
    assert {"restore_s", "verify_s", "total_s"} <= set(report.durations)
    assert live_state(memory) == before  # never touches the live store
    assert scratch_dirs(settings) == []

    records, problems = read_drills(open_destinations(settings))
    assert problems == []
    (record,) = records
    assert record["record"] == report.record and record["ok"] is True
    assert record["restored"]["id"] == backup_id and record["counts"] == report.counts
    assert record["durations"]["total_s"] == report.durations["total_s"]


def test_a_damaged_newest_backup_fails_the_drill_even_though_an_older_one_restores(
    settings: Settings, memory: Memory,
) -> None:
    fill(memory)
    older = backup(memory, settings)
    memory.add("only in the newest backup", user_id="alice", infer=False)
    newest = backup(memory, settings)
    damage(settings, newest, "vectors-0.f32.zst")
    before = live_state(memory)

    report = run_drill(settings)

    assert not report.ok and report.reason == "fallback"
    assert report.newest and report.newest["id"] == newest
    assert report.restored and report.restored["id"] == older  # which backup it ended up with
    assert newest in (report.error or "") and "vectors-0.f32.zst" in (report.error or "")
    assert "sha256" in (report.error or "") and older in (report.error or "")
    assert "memvault backup verify --all --read-data" in (report.hint or "")
    (record,), _ = read_drills(open_destinations(settings))
    assert record["ok"] is False and record["reason"] == "fallback"
    assert record["error"] == report.error and record["restored"]["id"] == older
    assert live_state(memory) == before and scratch_dirs(settings) == []

    damage(settings, older, "memories.jsonl.zst")  # now nothing restores
    report = run_drill(settings)
    assert not report.ok and report.reason == "restore"
    assert "no usable backup" in (report.error or "")
    assert "memories.jsonl.zst" in (report.error or "")
    assert scratch_dirs(settings) == []
    records, _ = read_drills(open_destinations(settings))
    assert [r["reason"] for r in records] == ["restore", "fallback"]  # newest first


def test_vectors_that_do_not_belong_to_their_texts_fail_the_drill(
    settings: Settings, memory: Memory, local_embedder: Any,
) -> None:
    """A backup that reads back cleanly but pairs vectors with the wrong ids (a writer bug):
    the stored ids are rotated and the manifest's checksums made to match."""
    fill(memory)
    backup_id = backup(memory, settings)
    folder = backup_folder(settings.backup_urls[0], backup_id)
    ids_file = folder / "vectors-0.ids.zst"
    ids = zstandard.ZstdDecompressor().decompressobj().decompress(ids_file.read_bytes())
    lines = ids.decode().split("\n")
    lines = [line for line in lines if line]
    rotated = ("\n".join(lines[1:] + lines[:1]) + "\n").encode()
    packed = zstandard.ZstdCompressor(write_checksum=True).compress(rotated)
    ids_file.write_bytes(packed)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["vectors-0.ids.zst"] = {"size": len(packed),
                                              "sha256": hashlib.sha256(packed).hexdigest()}
    del manifest["manifest_sha256"]
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))

    report = run_drill(settings, embedder=local_embedder)

    assert not report.ok and report.reason == "verify", report.error
    assert "do not belong to their texts" in (report.error or "")
    assert report.sample["texts"]["checked"] == 5 and report.sample["texts"]["far"]


def test_records_are_new_files_pruned_to_the_newest_20(
    settings: Settings, memory: Memory, local_embedder: Any,
) -> None:
    memory.add("one memory", user_id="alice", infer=False)
    backup(memory, settings)
    dest = LocalDestination(settings.backup_urls[0])
    keys = []
    for _ in range(22):
        report = run_drill(settings, embedder=local_embedder)
        assert report.ok, report.error
        keys.append(report.record)
    assert len(set(keys)) == 22
    lineage = memory.store.meta().lineage_id  # records live under the drilled lineage
    assert dest.list(f"lineages/{lineage}/drills/") == sorted(keys)[-20:]


# ------------------------------------------------------------------ the CLI


def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", str(settings.database_url))
    return CliRunner()


def test_cli_without_any_backup_fails_with_no_valid_backup(
    settings: Settings, memory: Memory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory.add("never backed up", user_id="alice", infer=False)
    runner = cli_env(settings, monkeypatch)
    out = runner.invoke(app, ["drill"])
    assert out.exit_code == 1, out.output
    assert "no valid backup" in out.stderr and "memvault backup create" in out.stderr
    as_json = runner.invoke(app, ["drill", "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["reason"] == "no_backup"
    assert "no valid backup" in report["error"]


def test_cli_json_reports_a_passing_drill(
    settings: Settings, memory: Memory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill(memory)
    backup_id = backup(memory, settings)
    runner = cli_env(settings, monkeypatch)
    out = runner.invoke(app, ["drill", "--json"])
    assert out.exit_code == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["restored"]["id"] == backup_id
    assert report["counts"] == memory.store.counts() and report["total"] == 26
    assert report["record"].startswith(f"lineages/{memory.store.meta().lineage_id}/drills/")
    table = runner.invoke(app, ["drill"])
    assert table.exit_code == 0 and "PASSED" in table.stdout and backup_id in table.stdout
    assert scratch_dirs(settings) == []


# ------------------------------------------------------------------ the scheduled job


@pytest.fixture
def webhook() -> Iterator[HTTPPeer]:
    peer = HTTPPeer({("POST", "/hook"): lambda body, headers: (200, {"ok": True})})
    with peer:
        yield peer


def notifications(webhook: HTTPPeer) -> list[str]:
    return [r["body"].get("title", "") for r in webhook.requests if r["path"] == "/hook"]


@contextmanager
def guard_for(settings: Settings, memory: Memory, webhook: HTTPPeer) -> Iterator[Guard]:
    alerting = load_settings({"data_dir": settings.data_dir,
                              "database_url": settings.database_url,
                              "alert_urls": f"json://127.0.0.1:{webhook.port}/hook"})
    guard = Guard(alerting, memory)
    guard.tick_seconds = 3600  # the test drives the drill job itself
    guard.start()
    try:
        yield guard
    finally:
        guard.stop()


def test_drill_job_fires_drill_failed_then_resolves_it_and_sets_the_gauge(
    settings: Settings, memory: Memory, webhook: HTTPPeer,
) -> None:
    fill(memory)
    newest = backup(memory, settings)
    damage(settings, newest, "vectors-0.f32.zst")  # the only backup: nothing restores
    with guard_for(settings, memory, webhook) as guard:
        job = DrillJob(guard.settings, memory, guard, retry_seconds=0)
        assert guard.registry.get_sample_value(METRIC) == 0
        failed = job.tick()  # no drill record yet: due at once
        assert failed is not None and not failed.ok
        titles = notifications(webhook)
        assert any("FIRING" in t and "DrillFailed" in t and newest in t for t in titles), titles
        assert guard.registry.get_sample_value("memvault_alerts_firing",
                                               {"alert": "DrillFailed"}) == 1
        assert guard.registry.get_sample_value(METRIC) == 0

        backup(memory, settings)  # a good backup appears
        passed = job.tick()  # a failed drill is retried after retry_seconds
        assert passed is not None and passed.ok, passed.error
        titles = notifications(webhook)
        assert any("RESOLVED" in t and "DrillFailed" in t for t in titles), titles
        assert guard.registry.get_sample_value("memvault_alerts_firing",
                                               {"alert": "DrillFailed"}) == 0
        stamp = guard.registry.get_sample_value(METRIC)
        assert stamp and abs(stamp - time.time()) < 60
        assert job.tick() is None  # the next one is due after MEMVAULT_DRILL_INTERVAL (7d)
        assert 6 * 86400 < job.seconds_until_due() <= 7 * 86400
        sent = len(notifications(webhook))

    with guard_for(settings, memory, webhook) as restarted:  # a restart: state from records
        job = DrillJob(restarted.settings, memory, restarted)
        job.refresh()
        assert restarted.registry.get_sample_value(METRIC) == stamp
        assert job.seconds_until_due() > 6 * 86400
        assert len(notifications(webhook)) == sent  # a resolved alert is not re-sent


def test_drill_job_waits_out_startup_and_runs_in_its_thread(
    settings: Settings, memory: Memory, webhook: HTTPPeer,
) -> None:
    memory.add("one memory", user_id="alice", infer=False)
    backup(memory, settings)
    with guard_for(settings, memory, webhook) as guard:
        job = DrillJob(guard.settings, memory, guard, startup_delay=0.6, tick_seconds=0.05)
        job.start()
        try:
            time.sleep(0.3)
            assert job.last is None  # startup first
            deadline = time.monotonic() + 20
            while job.last is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            job.stop()
        assert job.last is not None and job.last.ok, job.last and job.last.error
        records, _ = read_drills(guard.destinations)
        assert len(records) == 1  # one drill, then not due for 7 days
        assert guard.registry.get_sample_value(METRIC) and scratch_dirs(settings) == []
        assert not any("DrillFailed" in t for t in notifications(webhook))


def test_drill_job_without_any_backup_waits_and_records_nothing(
    settings: Settings, memory: Memory, webhook: HTTPPeer,
) -> None:
    with guard_for(settings, memory, webhook) as guard:
        job = DrillJob(guard.settings, memory, guard)
        assert job.tick() is None  # BackupStale's to report, not a failed drill
        assert read_drills(guard.destinations)[0] == []
        assert not any("DrillFailed" in t for t in notifications(webhook))


def test_a_drill_by_hand_resolves_the_servers_alert_and_restarts_the_interval(
    settings: Settings, memory: Memory, webhook: HTTPPeer, local_embedder: Any,
) -> None:
    memory.add("one memory", user_id="alice", infer=False)
    damage(settings, backup(memory, settings), "memories.jsonl.zst")
    with guard_for(settings, memory, webhook) as guard:
        job = DrillJob(guard.settings, memory, guard)
        failed = job.tick()
        assert failed is not None and failed.reason == "restore"
        assert guard.alerts.firing()["DrillFailed"]["details"]["hint"] == failed.hint
        assert job.seconds_until_due() <= 3600  # a failed drill is retried within the hour
        backup(memory, settings)
        by_hand = run_drill(settings, embedder=local_embedder)  # `memvault drill`
        assert by_hand.ok, by_hand.error
        job.refresh()  # what the job does every minute
        assert "DrillFailed" not in guard.alerts.firing()
        assert any("RESOLVED" in t and "DrillFailed" in t for t in notifications(webhook))
        assert guard.registry.get_sample_value(METRIC) == pytest.approx(
            datetime.fromisoformat(by_hand.finished_at).timestamp())
        assert job.seconds_until_due() > 6 * 86400
        assert job.tick() is None


def test_a_drill_in_a_shared_destination_drills_the_lineage_it_is_given(
    memory: Memory, settings: Settings, local_embedder: Any, tmp_path: Path
) -> None:
    fill(memory)
    mine = backup(memory, settings)
    other_settings = load_settings({"data_dir": settings.data_dir,
                                    "database_url": f"sqlite:///{tmp_path / 'o' / 'o.db'}"})
    with Memory(other_settings, embedder=local_embedder) as other:
        other.add("a note of another store", user_id="zed", infer=False)
        theirs = backup(other, other_settings)
        other_lineage = other.store.meta().lineage_id
    report = run_drill(settings, lineage_id=memory.store.meta().lineage_id)
    assert report.ok, report.error
    assert report.restored["id"] == mine and report.total == memory.store.total()
    report = run_drill(settings, lineage_id=other_lineage)
    assert report.ok and report.restored["id"] == theirs and report.total == 1
    unnamed = run_drill(settings)  # two lineages and no choice: said, not guessed
    assert not unnamed.ok and other_lineage in unnamed.error
