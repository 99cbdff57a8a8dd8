"""The guard: verdicts from the store and the ledger, the ledger kept with the backups, and the
incident replayed (a new empty database where the ledger knows data) on both backends."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from memvault.backup.destinations import LocalDestination
from memvault.backup.snapshot import create_backup
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.guard.api import Guard, guard_check
from memvault.guard.checks import Observation, assess, assess_backups
from memvault.guard.ledger import LedgerRecord, observe, read_ledger, write_ledger
from memvault.memory import Memory
from memvault.server.app import app_over
from tests.peers.http_peer import HTTPPeer
from tests.test_server_cli import free_port

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def obs(**changes: Any) -> Observation:
    base = dict(store_id="s1", lineage_id="L1", backend="sqlite", location="/db",
                active_embedder="local:m:384", seq=100, namespaces={"user:a": 60, "user:b": 40})
    base.update(changes)
    return Observation(**base)  # type: ignore[arg-type]


def ledger(**changes: Any) -> LedgerRecord:
    base = dict(lineage_id="L1", store_id="s1", backend="sqlite", location="/db",
                active_embedder="local:m:384", seq=100, memories=100,
                namespaces={"user:a": 60, "user:b": 40},
                observed_at=(NOW - timedelta(minutes=5)).isoformat())
    base.update(changes)
    return LedgerRecord(**base)  # type: ignore[arg-type]


def firing(verdict: Any) -> set[str]:
    return {f.alert for f in verdict.firing()}


def test_the_known_store_continuing_its_journal_is_accepted() -> None:
    verdict = assess(obs(seq=120), ledger(), "local:m:384", 0.5, NOW)
    assert firing(verdict) == set() and verdict.accept == "observed"
    first = assess(obs(), None, "local:m:384", 0.5, NOW)
    assert firing(first) == set() and first.accept == "first-seen"


def test_a_new_empty_store_where_the_ledger_knows_data_is_empty_and_replaced() -> None:
    verdict = assess(obs(store_id="s2", lineage_id="L2", seq=0, namespaces={},
                         active_embedder="ollama:nomic:768"),
                     ledger(), "ollama:nomic:768", 0.5, NOW)
    assert firing(verdict) == {"StoreEmpty", "StoreReplaced", "EmbedderMismatch"}
    assert verdict.accept is None  # never recorded as the guarded store
    summary = next(f.summary for f in verdict.findings if f.alert == "StoreEmpty")
    assert "held 100 memories" in summary and "L1" in summary


def test_another_stores_data_is_replaced_not_empty() -> None:
    verdict = assess(obs(store_id="s9", lineage_id="L9"), ledger(), "local:m:384", 0.5, NOW)
    assert firing(verdict) == {"StoreReplaced"}


def test_a_rolled_back_store_is_replaced_unless_memvault_restored_it() -> None:
    rolled = assess(obs(seq=80), ledger(), "local:m:384", 0.5, NOW)
    assert firing(rolled) == {"StoreReplaced"} and "rolled back" in rolled.findings[1].summary
    marker = {"backup": "b1", "finished_at": NOW.isoformat(), "replayed_upto": 80,
              "restore_id": "r1"}
    restored = assess(obs(seq=80, restored_from=marker), ledger(), "local:m:384", 0.5, NOW)
    assert firing(restored) == set() and restored.accept == "restored"
    assert restored.restored == "r1"  # the ledger accepts this restore once
    assert "81..100 (20 entries)" in (restored.note or "")  # the loss is stated, not hidden


def test_a_rollback_is_never_taken_for_a_restore_by_its_clock() -> None:
    """A restore stamped by a clock 400 days ahead, then an older copy put back: still a
    rollback (the ledger accepted that restore already, or the copy's seq is not where the
    restore left it)."""
    future = (NOW + timedelta(days=400)).isoformat()
    marker = {"backup": "b1", "finished_at": future, "replayed_upto": 60, "restore_id": "r1"}
    accepted = ledger(restores=["r1"])  # the guard recorded r1, the lineage then reached 100
    rolled = assess(obs(seq=60, restored_from=marker), accepted, "local:m:384", 0.5, NOW)
    assert firing(rolled) == {"StoreReplaced"} and rolled.accept is None
    assert "r1" in next(f.summary for f in rolled.firing())
    copy_later = assess(obs(seq=80, restored_from=marker), ledger(), "local:m:384", 0.5, NOW)
    assert firing(copy_later) == {"StoreReplaced"}  # written to past the restore, then cut
    old_marker = {"backup": "b1", "finished_at": future}  # no replayed_upto: not provable
    assert firing(assess(obs(seq=80, restored_from=old_marker), ledger(), "local:m:384", 0.5,
                         NOW)) == {"StoreReplaced"}


def test_a_drop_beyond_the_ratio_within_24h_is_a_count_drop() -> None:
    earlier = ledger(recent=[((NOW - timedelta(hours=3)).isoformat(), 400)])
    verdict = assess(obs(seq=500), earlier, "local:m:384", 0.5, NOW)
    assert firing(verdict) == {"MemoryCountDrop"}
    old = ledger(recent=[((NOW - timedelta(hours=30)).isoformat(), 400)])
    assert firing(assess(obs(seq=500), old, "local:m:384", 0.5, NOW)) == set()


def test_a_replaced_store_that_never_held_data_is_simply_accepted() -> None:
    verdict = assess(obs(store_id="s2", lineage_id="L2", seq=0, namespaces={}),
                     ledger(seq=0, memories=0, namespaces={}), "local:m:384", 0.5, NOW)
    assert firing(verdict) == set() and verdict.accept == "first-seen"


def test_backup_findings_stale_invalid_and_lagging() -> None:
    from memvault.backup.snapshot import BackupResult

    day = 86400.0
    now = 1_000_000.0
    fine = assess_backups(now, now - day, [BackupResult("file:///b", "x", "valid")], 0.0,
                          day, 10.0)
    assert [f.alert for f in fine if f.firing] == []
    stale = assess_backups(now, now - 2 * day, [], 0.0, day, 10.0)
    assert [f.alert for f in stale if f.firing] == ["BackupStale"]
    bad = assess_backups(now, now - 60, [BackupResult("file:///b", "x", "suspicious",
                                                      ["holds 0 memories after 40"])],
                         0.0, day, 10.0)
    (invalid,) = [f for f in bad if f.firing]
    assert invalid.alert == "BackupInvalid" and "holds 0 memories after 40" in invalid.summary
    lagging = assess_backups(now, now - 60, [], 61.0, day, 10.0)
    assert [f.alert for f in lagging if f.firing] == ["JournalLag"]
    assert not any(f.firing for f in assess_backups(now, now - 60, [], 59.0, day, 10.0))


def test_scheduled_backups_wait_for_the_guard_and_skip_a_replaced_store(
    settings: Settings, memory: Memory,
) -> None:
    from memvault.backup.scheduler import BackupScheduler

    guard = Guard(settings, memory)
    scheduler = BackupScheduler(memory.store, settings, hold=guard.backup_hold)
    assert scheduler.held() == "the guard has not checked the store yet"
    guard.check()
    assert scheduler.held() is None  # the guarded store: back it up
    guard.verdict = assess(obs(), ledger(lineage_id="other"), None, 0.5, NOW)
    assert "StoreReplaced" in (scheduler.held() or "")


def test_a_newer_backup_raises_what_the_ledger_knows() -> None:
    from memvault.guard.ledger import merge

    record = ledger(seq=0, memories=0, namespaces={})  # written at startup, before any data
    backup = ledger(seq=1962, memories=1962, namespaces={"user:bob": 1962}, note="b1",
                    observed_at=NOW.isoformat())
    merged = merge(record, backup)
    assert merged is not None and (merged.seq, merged.memories) == (1962, 1962)
    assert firing(assess(obs(store_id="s2", lineage_id="L2", seq=0, namespaces={}), merged,
                         "local:m:384", 0.5, NOW)) >= {"StoreEmpty"}
    older = ledger(seq=50, observed_at=(NOW - timedelta(days=2)).isoformat())
    assert merge(ledger(), older) == ledger()  # an older backup teaches nothing
    adopted = ledger(lineage_id="L9", observed_at=NOW.isoformat())
    assert merge(adopted, older).lineage_id == "L9"  # the later word wins across lineages


def test_ledger_records_are_new_files_and_the_newest_readable_wins(tmp_path: Path) -> None:
    dest = LocalDestination(tmp_path / "backups")
    assert read_ledger([dest]) == (None, [])
    first = observe(None, lineage_id="L1", store_id="s1", backend="sqlite", location="/db",
                    active_embedder="local:m:384", seq=10, namespaces={"user:a": 10},
                    now=NOW - timedelta(hours=1))
    second = observe(first, lineage_id="L1", store_id="s1", backend="sqlite", location="/db",
                     active_embedder="local:m:384", seq=12, namespaces={"user:a": 12}, now=NOW)
    assert write_ledger([dest], first) == [] and write_ledger([dest], second) == []
    keys = dest.list("lineages/L1/ledger/")
    assert len(keys) == 2 and keys[0].startswith("lineages/L1/ledger/0000000000000010-")
    found, problems = read_ledger([dest])
    assert found is not None and (found.seq, found.memories) == (12, 12) and problems == []
    assert found.recent == [(first.observed_at, 10)]
    # A damaged newest record is reported and the one before it is used.
    (tmp_path / "backups" / keys[-1]).write_text("{not json")
    found, problems = read_ledger([dest])
    assert found is not None and found.seq == 10
    assert problems and "unreadable ledger record" in problems[0]


# ---------------------------------------------------------------- the incident, replayed


@pytest.fixture
def webhook() -> Any:
    peer = HTTPPeer({("POST", "/hook"): lambda body, headers: (200, {"ok": True})})
    with peer:
        yield peer


def other_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second, empty database: what the recreated containers connected to."""
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        name = "t_" + uuid.uuid4().hex[:12]
        server.psql(f"CREATE DATABASE {name};")
        request.addfinalizer(lambda: server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);"))
        return str(server.get_uri(name))
    return f"sqlite:///{tmp_path / 'recreated' / 'memvault.db'}"


def guarded_settings(settings: Settings, webhook: HTTPPeer, **more: Any) -> Settings:
    return load_settings({"data_dir": settings.data_dir, "database_url": settings.database_url,
                          "alert_urls": f"json://127.0.0.1:{webhook.port}/hook", **more})


@contextmanager
def running(guard: Guard) -> Iterator[Guard]:
    """Started as `serve` starts it: leader election, then the first check at once."""
    guard.tick_seconds = 3600  # the test drives further checks itself
    guard.start()
    try:
        yield guard
    finally:
        guard.stop()


def wait_for(condition: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def notifications(webhook: HTTPPeer) -> list[str]:
    return [r["body"].get("title", "") for r in webhook.requests if r["path"] == "/hook"]


def test_a_new_empty_database_is_alerted_and_refilled_from_the_newest_backup(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    webhook: HTTPPeer, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    for user in ("alice", "bob", "carol"):
        memory.add([{"role": "user", "content": f"{user} note {i}"} for i in range(7)],
                   user_id=user, infer=False)
    memory.add("alice likes sailing on the lake", user_id="alice", infer=False)
    before = memory.store.counts()
    original = guarded_settings(settings, webhook)
    assert all(r.status == "valid" for r in create_backup(memory.store, original))
    with running(Guard(original, memory)) as first:  # the ledger learns the store
        written, _ = read_ledger(first.destinations)
        assert written is not None and written.event == "observed"  # a real record now
        assert written.memories == sum(before.values())
    assert notifications(webhook) == []

    recreated = load_settings({**{"data_dir": settings.data_dir},
                               "database_url": other_database(backend, tmp_path, request),
                               "alert_urls": f"json://127.0.0.1:{webhook.port}/hook"})
    with Memory(recreated, embedder=local_embedder) as fresh, \
            running(Guard(recreated, fresh)) as guard:  # alerts, restores, checks again
        verdict = wait_for(lambda: guard.restore and guard.verdict
                           and not guard.verdict.firing() and guard.verdict)
        titles = notifications(webhook)
        assert any("StoreEmpty" in t and "FIRING" in t for t in titles), titles
        assert any("StoreReplaced" in t and "FIRING" in t for t in titles), titles
        assert any("StoreEmpty" in t and "RESOLVED" in t for t in titles), titles
        assert verdict.firing() == [], [f.summary for f in verdict.firing()]
        assert guard.restore["ok"] is True
        assert fresh.store.counts() == before
        hits = fresh.search("who goes sailing", user_id="alice", top_k=1)["results"]
        assert hits[0]["memory"] == "alice likes sailing on the lake"
        assert guard.registry.get_sample_value("memvault_store_identity_ok") == 1
        record, _ = read_ledger(guard.destinations)
        assert record is not None and record.store_id == fresh.store.meta().store_id


def test_an_automatic_restore_that_cannot_bring_back_everything_says_so(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    webhook: HTTPPeer, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    memory.add([{"role": "user", "content": f"kept note {i}"} for i in range(5)],
               user_id="alice", infer=False)
    original = guarded_settings(settings, webhook)
    assert all(r.status == "valid" for r in create_backup(memory.store, original))
    backed_up = memory.store.counts()
    # Written after the backup and never shipped (the server died before its next cycle),
    # but seen by the guard, so the ledger's high-water mark is past what the backups hold.
    memory.add([{"role": "user", "content": f"lost note {i}"} for i in range(3)],
               user_id="alice", infer=False)
    with running(Guard(original, memory)):
        pass
    lost_upto = memory.store.last_seq()

    recreated = load_settings({"data_dir": settings.data_dir,
                               "database_url": other_database(backend, tmp_path, request),
                               "alert_urls": f"json://127.0.0.1:{webhook.port}/hook"})
    with Memory(recreated, embedder=local_embedder) as fresh, \
            running(Guard(recreated, fresh)) as guard:
        wait_for(lambda: guard.restore and guard.verdict and not guard.verdict.firing())
        assert fresh.store.counts() == backed_up  # what could be brought back is served
        assert guard.restore["plan"]["loss"]["lost"] is True
        lossy = [r["body"] for r in webhook.requests
                 if "WITH LOSS" in r["body"].get("title", "")]
        assert len(lossy) == 1, notifications(webhook)
        assert f"..{lost_upto} are lost" in lossy[0]["message"], lossy[0]
        assert fresh.store.last_seq() >= lost_upto  # the lost seqs are never handed out again


def test_without_auto_restore_an_empty_store_stays_refused(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    webhook: HTTPPeer, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    memory.add("something worth keeping", user_id="alice", infer=False)
    original = guarded_settings(settings, webhook)
    create_backup(memory.store, original)
    with running(Guard(original, memory)):
        pass
    recreated = load_settings({"data_dir": settings.data_dir, "auto_restore": "never",
                               "database_url": other_database(backend, tmp_path, request)})
    with Memory(recreated, embedder=local_embedder) as fresh:
        with running(Guard(recreated, fresh)) as guard, \
                TestClient(app_over(recreated, fresh, guard=guard)) as client:
            # The incident's API answered "healthy" with empty results; this one refuses.
            refused = client.post("/search", json={"query": "anything", "user_id": "alice"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "store_refused"
            assert "StoreEmpty" in refused.json()["alerts"] and refused.json()["request_id"]
            assert client.post("/memories", json={"messages": "x", "user_id": "a"}
                               ).status_code == 503  # no fork of the lineage either
            assert client.get("/livez").status_code == 200
            assert client.get("/readyz").status_code == 503
            check = guard_check(guard)
            assert check["ok"] is False and "StoreEmpty" in check["alerts"]
            assert guard.registry.get_sample_value("memvault_store_identity_ok") == 0
            assert guard.registry.get_sample_value(
                "memvault_alerts_firing", {"alert": "StoreEmpty"}) == 1
            assert fresh.store.total() == 0  # never filled behind the operator's back
        status = guard.status()
        assert json.dumps(status)  # serialisable for /status


def test_status_reports_a_replaced_store_and_adopt_accepts_it(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from memvault.cli import app

    memory.add("the guarded store's memory", user_id="alice", infer=False)
    with running(Guard(settings, memory)):
        pass  # the ledger now names this store
    other = other_database(backend, tmp_path, request)
    with Memory(load_settings({"data_dir": settings.data_dir, "database_url": other}),
                embedder=local_embedder) as stranger:
        stranger.add("another store's memory", user_id="zed", infer=False)
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", other)
    runner = CliRunner()

    status = runner.invoke(app, ["status", "--json"])
    report = json.loads(status.stdout)
    assert status.exit_code == 2, status.stdout  # CRITICAL
    assert report["guard"]["firing"] == ["StoreReplaced"]
    refused = runner.invoke(app, ["adopt", "--json"])
    assert refused.exit_code == 1 and "--yes" in refused.stderr

    adopted = runner.invoke(app, ["adopt", "--yes", "--reason", "moved to the new cluster",
                                  "--json"])
    assert adopted.exit_code == 0, adopted.stdout + adopted.stderr
    assert "moved to the new cluster" in json.loads(adopted.stdout)["result"]
    # Records live per lineage: the adopted store's lineage holds the adoption.
    record, _ = read_ledger([LocalDestination(settings.data_dir / "backups")],
                            json.loads(adopted.stdout)["lineage_id"])
    assert record is not None and record.event == "adopted" and record.memories == 1
    after = runner.invoke(app, ["status", "--json"])
    assert after.exit_code == 0, after.stdout
    assert json.loads(after.stdout)["guard"]["firing"] == []
    again = runner.invoke(app, ["adopt", "--yes"])
    assert again.exit_code == 0 and "nothing to adopt" in again.stdout


def test_replicas_on_one_postgres_send_one_notification_not_one_each(
    pg_url: str, tmp_path: Path, local_embedder: LocalEmbedder, webhook: HTTPPeer,
) -> None:
    settings = load_settings({"data_dir": tmp_path / "data", "database_url": pg_url,
                              "alert_urls": f"json://127.0.0.1:{webhook.port}/hook"})
    with Memory(settings, embedder=local_embedder) as first, \
            Memory(settings, embedder=local_embedder) as second:
        first.add("held by the guarded store", user_id="alice", infer=False)
        # The ledger names another store: both replicas see StoreReplaced.
        write_ledger([LocalDestination(tmp_path / "data" / "backups")],
                     ledger(observed_at=datetime.now(UTC).isoformat()))
        with running(Guard(settings, first)) as leader, \
                running(Guard(settings, second)) as follower:
            assert leader.elector.is_leader() and not follower.elector.is_leader()
            assert guard_check(leader)["ok"] is False and guard_check(follower)["ok"] is False
            follower.check()
            leader.check()
    fired = [t for t in notifications(webhook) if t.startswith("[FIRING] StoreReplaced")]
    assert len(fired) == 1, notifications(webhook)


def test_the_shipped_journal_raises_a_stale_ledger(
    settings: Settings, memory: Memory, tmp_path: Path,
) -> None:
    """kill -9 before the ledger's next write: it still says "empty", the journal knows better."""
    from memvault.backup.shipper import JournalShipper

    dest = LocalDestination(tmp_path / "data" / "backups")
    meta = memory.store.meta()
    first = observe(None, lineage_id=meta.lineage_id, store_id=meta.store_id,
                    backend=meta.backend, location=meta.location, active_embedder=None,
                    seq=0, namespaces={})
    write_ledger([dest], first)
    memory.add([{"role": "user", "content": f"note {i}"} for i in range(5)], user_id="alice",
               infer=False)
    assert JournalShipper(memory.store, settings, [dest]).ship() >= 1
    known, problems = read_ledger([dest])
    assert problems == [] and known is not None
    assert known.seq == memory.store.last_seq() > 0
    verdict = assess(obs(store_id="new", lineage_id="L-new", seq=0, namespaces={}), known,
                     None, 0.5)
    assert "StoreEmpty" in firing(verdict)  # not waved through as "never held data"


def test_a_daily_digest_goes_out_once_a_day_even_when_all_is_well(
    settings: Settings, memory: Memory, webhook: HTTPPeer,
) -> None:
    from memvault.guard.api import read_observation

    memory.add([{"role": "user", "content": f"fact {i}"} for i in range(3)], user_id="alice",
               infer=False)
    guarded = guarded_settings(settings, webhook)
    morning = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    with running(Guard(guarded, memory)) as guard:
        observation, verdict = read_observation(memory), guard.verdict
        assert verdict is not None
        assert not guard._maybe_digest(observation, verdict, now=morning.replace(hour=7))
        assert guard._maybe_digest(observation, verdict, now=morning)
        assert not guard._maybe_digest(observation, verdict, now=morning.replace(hour=20))
    digests = [t for t in notifications(webhook) if t.startswith("[DIGEST]")]
    assert digests == ["[DIGEST] memvault OK: 3 memories in 1 namespaces"]
    body = next(r["body"]["message"] for r in webhook.requests
                if r["body"].get("title", "").startswith("[DIGEST]"))
    assert "user:alice: 3" in body and "alerts firing: none" in body
    with running(Guard(guarded, memory)) as restarted:  # a restart the same day: no repeat
        assert restarted.verdict is not None
        assert not restarted._maybe_digest(observation, restarted.verdict, now=morning)
        assert restarted._maybe_digest(observation, restarted.verdict,
                                       now=morning + timedelta(days=1))


def test_an_unreadable_ledger_is_unknown_not_a_first_start(
    settings: Settings, memory: Memory,
) -> None:
    memory.add("kept while the NAS is down", user_id="alice", infer=False)
    down = load_settings({"data_dir": settings.data_dir, "database_url": settings.database_url,
                          "backup_urls": "s3://memvault/backups",
                          "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
                          "s3_access_key_id": "k", "s3_secret_access_key": "s",
                          "s3_retries": 1})
    guard = Guard(down, memory)
    verdict = guard.check()
    assert verdict.accept is None  # never recorded as "the guarded store" blindly
    assert guard.ledger is None and guard.ledger_problems
    assert "127.0.0.1" in guard.ledger_problems[0]


def test_a_restore_killed_halfway_is_finished_by_the_guard(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    for user in ("alice", "bob"):
        memory.add([{"role": "user", "content": f"{user} fact {i}"} for i in range(6)],
                   user_id=user, infer=False)
    before = memory.store.counts()
    assert all(r.status == "valid" for r in create_backup(memory.store, settings))
    with running(Guard(settings, memory)):
        pass
    recreated = load_settings({"data_dir": settings.data_dir,
                               "database_url": other_database(backend, tmp_path, request)})
    with Memory(recreated, embedder=local_embedder) as fresh:
        # What a kill -9 in the middle of a restore leaves: some rows and the marker.
        fresh.add("alice fact 0", user_id="alice", infer=False)
        fresh.store.set_meta("restore_incomplete", {"backup": "b-killed",
                                                    "started_at": "2026-11-24T03:00:00+00:00"})
        with running(Guard(recreated, fresh)) as guard:
            first = guard.verdict
            assert first is not None and "unfinished restore" in next(
                f.summary for f in first.firing() if f.alert == "StoreEmpty")
            wait_for(lambda: guard.restore and guard.verdict and not guard.verdict.firing())
        assert guard.restore["ok"] is True
        assert fresh.store.get_meta("restore_incomplete") is None
        assert fresh.store.counts() == before


def test_a_model_swapped_behind_the_same_name_while_running_is_caught(
    tmp_path: Path, webhook: HTTPPeer,
) -> None:
    from memvault.errors import EmbedderMismatch
    from tests.peers.embedding_server import EmbeddingServer

    with EmbeddingServer(dims=32) as peer:
        settings = load_settings({
            "data_dir": tmp_path / "data", "database_url": f"sqlite:///{tmp_path / 'm.db'}",
            "embedder": "openai:embed-v1", "embedder_url": f"{peer.url}/v1",
            "alert_urls": f"json://127.0.0.1:{webhook.port}/hook"})
        with Memory(settings) as memory:
            memory.add("a fact about boats", user_id="alice", infer=False)
            with running(Guard(settings, memory, probe_seconds=0)) as guard:
                assert guard.verdict is not None and not guard.verdict.firing()
                route = peer.routes[("POST", "/v1/embeddings")]
                # Someone pulls a different model under the same name on the server.
                peer.routes[("POST", "/v1/embeddings")] = lambda body, headers: route(
                    {**body, "model": "embed-v2"}, headers)
                swapped = guard.check()
                assert [f.alert for f in swapped.firing()] == ["EmbedderMismatch"]
                assert guard_check(guard)["ok"] is False
                with pytest.raises(EmbedderMismatch, match="answers the probe texts"):
                    memory.search("boats", user_id="alice")
                peer.routes[("POST", "/v1/embeddings")] = route  # the old model is back
                assert not guard.check().firing()
                assert memory.search("boats", user_id="alice")["results"]
    titles = notifications(webhook)
    assert any(t.startswith("[FIRING] EmbedderMismatch") for t in titles), titles
    assert any(t.startswith("[RESOLVED] EmbedderMismatch") for t in titles), titles


def test_a_process_left_on_the_old_embedder_after_a_switch_stops_writing(
    settings: Settings, memory: Memory,
) -> None:
    """`memvault reembed` switched the store while this process still embeds with the old
    model: its writes would carry no vector of the active model (unsearchable)."""
    from memvault.errors import EmbedderMismatch
    from tests.helpers import identity

    memory.add("written before the switch", user_id="alice", infer=False)
    original = memory.store.meta().active_embedder
    assert original is not None
    with running(Guard(settings, memory)) as guard:
        other = identity("reembedded-model", 384)
        memory.store.register_embedder(other)
        memory.store.set_active_embedder(other.key)  # what the switch does
        assert "EmbedderMismatch" in {f.alert for f in guard.check().firing()}
        with pytest.raises(EmbedderMismatch):
            memory.add("written after the switch", user_id="alice", infer=False)
        assert memory.store.total() == 1
        memory.store.set_active_embedder(original)  # switched back
        assert not guard.check().firing()
        memory.add("written after switching back", user_id="alice", infer=False)
        assert memory.store.total() == 2


def test_format_1_ledger_records_are_still_read_and_newer_seqs_win(tmp_path: Path) -> None:
    dest = LocalDestination(tmp_path / "backups")
    old = ledger(seq=40, observed_at=(NOW + timedelta(days=400)).isoformat())
    dest.put_bytes("ledger/20281229T120000000000Z-000000000040.json",
                   json.dumps(old.to_json()).encode())  # written by an earlier version
    found, problems = read_ledger([dest], "L1")
    assert problems == [] and found is not None and found.seq == 40
    assert write_ledger([dest], ledger(seq=41)) == []  # a later seq, an earlier clock
    found, _ = read_ledger([dest], "L1")
    assert found is not None and found.seq == 41
    assert dest.list("ledger/")  # format-1 records are never written nor pruned
