"""Failover to a physical standby built with `pg_basebackup -R` from the wheel's binaries.

An up-to-date standby is the same store (same cluster identity, lineage and seq): the guard
accepts it and writes continue. A standby promoted behind the ledger is a store rolled back:
the guard fires StoreReplaced and the API refuses writes, so no seq is handed out twice."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from memvault.backup.layout import snapshots_prefix
from memvault.backup.shipper import JournalShipper
from memvault.backup.snapshot import create_backup
from memvault.cli import app
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.guard.api import Guard, guard_check
from memvault.memory import Memory
from memvault.server.app import app_over
from tests.pg_cluster import Cluster, Standby
from tests.test_guard import running, wait_for

WRITE_TARGET_S = 10.0


@pytest.fixture
def pair() -> Iterator[tuple[Cluster, Standby]]:
    primary = Cluster()
    database = conninfo_to_dict(primary.create_database())["dbname"]
    standby = Standby(primary, str(database))
    yield primary, standby
    standby.close()
    primary.close()


def _body(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], "user_id": "alice", "infer": False}


def _write(client: TestClient, text: str) -> None:
    response = client.post("/memories", json=_body(text))
    assert response.status_code == 200, response.text


def test_an_up_to_date_standby_is_the_same_store_and_takes_writes(
    pair: tuple[Cluster, Standby], tmp_path: Path, local_embedder: LocalEmbedder,
) -> None:
    primary, standby = pair
    data_dir = tmp_path / "data"
    before = load_settings({"data_dir": data_dir, "database_url": primary.server.get_uri(
        standby.database)})
    with Memory(before, embedder=local_embedder) as memory, \
            running(Guard(before, memory)) as guard, \
            TestClient(app_over(before, memory, guard=guard)) as client:
        for i in range(5):
            _write(client, f"acknowledged write {i}")
        guard.check()
        meta, seq = memory.store.meta(), memory.store.last_seq()
        first = create_backup(memory.store, before)
    wait_for(standby.caught_up, timeout=30)
    primary.stop()  # the primary is gone: the operator promotes and repoints memvault
    standby.promote()
    after = load_settings({"data_dir": data_dir, "database_url": standby.url})
    started = time.monotonic()
    with Memory(after, embedder=local_embedder) as memory, \
            running(Guard(after, memory)) as guard, \
            TestClient(app_over(after, memory, guard=guard)) as client:
        assert guard_check(guard)["ok"] is True, guard_check(guard)
        _write(client, "the first write on the promoted standby")
        took = time.monotonic() - started
        moved = memory.store.meta()
        assert (moved.store_id, moved.lineage_id) == (meta.store_id, meta.lineage_id)
        assert moved.extra["pg_system_identifier"] == meta.extra["pg_system_identifier"]
        assert memory.store.last_seq() > seq  # continues the lineage's seqs
        texts = {m["memory"] for m in client.get("/memories", params={
            "user_id": "alice"}).json()["results"]}
        assert {f"acknowledged write {i}" for i in range(5)} <= texts  # nothing lost
        second = create_backup(memory.store, after)
    # One chain: both snapshots land in the one lineage's folder, seqs moving forward.
    folders = sorted(p.name for p in (data_dir / "backups" / snapshots_prefix(
        meta.lineage_id)).iterdir())
    assert [r.status for r in (*first, *second)] == ["valid", "valid"]
    assert [f.split("-", 1)[1] for f in folders] == [first[0].id, second[0].id], folders
    print(f"writes accepted {took:.2f} s after memvault was pointed at the standby")
    assert took <= WRITE_TARGET_S


def test_a_standby_promoted_behind_is_refused_then_caught_up_from_the_shipped_journal(
    pair: tuple[Cluster, Standby], tmp_path: Path, local_embedder: LocalEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary, standby = pair
    data_dir = tmp_path / "data"
    before = load_settings({"data_dir": data_dir, "database_url": primary.server.get_uri(
        standby.database)})
    with Memory(before, embedder=local_embedder) as memory, \
            running(Guard(before, memory)) as guard, \
            TestClient(app_over(before, memory, guard=guard)) as client:
        _write(client, "replicated before the cut")
        wait_for(standby.caught_up, timeout=30)
        standby.cut_off()
        shipped = [f"shipped, never replicated {i}" for i in range(3)]
        for text in shipped:
            _write(client, text)
        JournalShipper(memory.store, before).ship()  # one journal interval's shipping
        _write(client, "acknowledged after the last shipping")  # inside the RPO
        unshipped_seq = seq = memory.store.last_seq()
    primary.stop()
    standby.promote()
    after = load_settings({"data_dir": data_dir, "database_url": standby.url})
    started = time.monotonic()
    with Memory(after, embedder=local_embedder) as memory, \
            running(Guard(after, memory)) as guard, \
            TestClient(app_over(after, memory, guard=guard)) as client:
        check = guard_check(guard)
        alerted = time.monotonic() - started
        stale_seq = memory.store.last_seq()
        assert stale_seq < seq, (stale_seq, seq)
        assert check["ok"] is False and "StoreReplaced" in check["alerts"], check
        refused = client.post("/memories", json=_body("would fork a seq"))
        assert refused.status_code == 503 and refused.json()["code"] == "store_refused"
        assert memory.store.last_seq() == stale_seq  # no seq handed out a second time
    print(f"StoreReplaced {alerted:.2f} s after memvault was pointed at the stale standby")
    assert alerted <= 10.0

    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", standby.url)
    caught = CliRunner().invoke(app, ["restore", "--catch-up", "--json"])
    assert caught.exit_code == 1, caught.stdout + caught.stderr  # caught up, with a loss
    report = json.loads(caught.stdout)
    assert report["store_seq"] == stale_seq and report["replayed"] == len(shipped)
    assert report["lost"] == [unshipped_seq, unshipped_seq]  # the RPO: never shipped
    with Memory(after, embedder=local_embedder) as memory, \
            running(Guard(after, memory)) as guard, \
            TestClient(app_over(after, memory, guard=guard)) as client:
        assert guard_check(guard)["ok"] is True, guard_check(guard)
        texts = {m["memory"] for m in client.get("/memories", params={
            "user_id": "alice"}).json()["results"]}
        assert {"replicated before the cut", *shipped} <= texts  # every shipped write is back
        _write(client, "the first write after the catch-up")
        seqs = [e.seq for e in memory.store.journal(0, 10_000)]
        assert len(seqs) == len(set(seqs)) and max(seqs) > unshipped_seq  # no forked seq
    again = CliRunner().invoke(app, ["restore", "--catch-up", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["replayed"] == 0


def test_catch_up_refuses_a_store_whose_journal_forked_from_the_shipped_one(
    pair: tuple[Cluster, Standby], tmp_path: Path, local_embedder: LocalEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary, standby = pair
    data_dir = tmp_path / "data"
    before = load_settings({"data_dir": data_dir, "database_url": primary.server.get_uri(
        standby.database)})
    with Memory(before, embedder=local_embedder) as memory:
        memory.add("replicated before the cut", user_id="alice", infer=False)
        wait_for(standby.caught_up, timeout=30)
        standby.cut_off()
        memory.add("shipped from the old primary", user_id="alice", infer=False)
        JournalShipper(memory.store, before).ship()
    primary.stop()
    standby.promote()
    after = load_settings({"data_dir": data_dir, "database_url": standby.url})
    with Memory(after, embedder=local_embedder) as stale:  # unguarded: a second writer
        stale.add("written on the promoted standby, same seq", user_id="alice", infer=False)
        forked_total = stale.store.total()
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", standby.url)
    refused = CliRunner().invoke(app, ["restore", "--catch-up"])
    assert refused.exit_code != 0
    assert "differ" in refused.stderr and "forked" in refused.stderr, refused.stderr
    with Memory(after, embedder=local_embedder) as stale:
        assert stale.store.total() == forked_total  # nothing replayed over the fork
