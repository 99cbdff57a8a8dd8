"""The watcher's sidecar endpoints (/livez /readyz /status /metrics) and its verdicts on a
mem0-layout table written directly (no mem0 needed for these rules)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from memvault.config import load_settings
from memvault.guard.alerts import Alert
from memvault.guard.ledger import LedgerRecord
from memvault.server.watch_app import create_watch_app
from memvault.watch import Watcher
from memvault.watch.checks import TableObservation, assess_table
from memvault.watch.table import TableIdentity


def mem0_table(dsn: str, rows: int, dims: int = 3, user: str = "alice") -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(rows)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"CREATE TABLE IF NOT EXISTS memories (id uuid PRIMARY KEY, vector "
                     f"vector({dims}), payload jsonb)")
        for n, memory_id in enumerate(ids):
            conn.execute("INSERT INTO memories VALUES (%s, %s, %s)", (
                memory_id, "[" + ",".join(["0.5"] * dims) + "]",
                json.dumps({"data": f"fact {n}", "hash": "h", "user_id": user,
                            "created_at": "2026-01-01T00:00:00+00:00",
                            "updated_at": "2026-01-01T00:00:00+00:00"})))
    return ids


def test_sidecar_endpoints_follow_the_verdict(pg_url: str, tmp_path: Path) -> None:
    mem0_table(pg_url, 5)
    settings = load_settings({"data_dir": tmp_path / "data",
                              "backup_urls": [str(tmp_path / "nas")],
                              "admin_api_key": "k" * 32, "journal_interval": "1s"})
    watcher = Watcher(settings, pg_url, tick_seconds=0.2)
    try:
        with TestClient(create_watch_app(watcher, settings)) as http:
            assert http.get("/livez").json() == {"status": "ok"}
            assert http.get("/readyz").status_code == 200
            assert http.get("/status").status_code == 401
            admin = {"Authorization": f"Bearer {'k' * 32}"}
            deadline = time.monotonic() + 20  # the first look runs in the watch loop
            while not watcher.captured and time.monotonic() < deadline:
                time.sleep(0.05)
            status = http.get("/status", headers=admin).json()
            assert status["mirror"]["counts"] == {"user:alice": 5}
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("DELETE FROM memories")
            watcher.check()
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["failing"][0]["name"] == "StoreEmpty"
            assert "host=" not in ready.text and "/tmp/" not in ready.text  # not for anyone
            assert "empty" in http.get("/readyz", headers=admin).json()["failing"][0]["message"]
            metrics = http.get("/metrics", headers={"X-API-Key": "k" * 32}).text
            assert 'memvault_alerts_firing{alert="StoreEmpty"} 1.0' in metrics
            assert 'memvault_memories{namespace="user:alice"} 5.0' in metrics
            assert "memvault_backup_runs_total" in metrics
    finally:
        watcher.close()


def test_a_deliberate_reset_is_adopted(pg_url: str, tmp_path: Path) -> None:
    mem0_table(pg_url, 4)
    settings = load_settings({"data_dir": tmp_path / "data",
                              "backup_urls": [str(tmp_path / "nas")]})
    first = Watcher(settings, pg_url)
    try:
        assert not first.check().firing()
    finally:
        first.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # mem0's reset: drop, create
        conn.execute("DROP TABLE memories")
    mem0_table(pg_url, 2, user="bob")
    again = Watcher(settings, pg_url)
    try:
        assert {f.alert for f in again.check().firing()} == {Alert.StoreReplaced}
    finally:
        again.close()
    adopted = Watcher(settings, pg_url, adopt=True)
    try:
        assert not adopted.check().firing()
        assert adopted.store.counts() == {"user:bob": 2}
        assert adopted.ledger is not None and adopted.ledger.event == "adopted"
        # the first add and delete of the old rows are in the mirror's journal
        assert {e.op for e in adopted.store.journal(0)} == {"ADD", "DELETE"}
    finally:
        adopted.close()
    later = Watcher(settings, pg_url)
    try:
        assert not later.check().firing()
    finally:
        later.close()


def _ledger(memories: int, store_id: str, dims: int = 3, **more: Any) -> LedgerRecord:
    return LedgerRecord(lineage_id="L", store_id=store_id, backend="mem0-pgvector",
                        location="x", active_embedder=f"mem0:memories:{dims}", seq=9,
                        memories=memories, namespaces={"user:a": memories},
                        observed_at=datetime.now(UTC).isoformat(), **more)


@pytest.mark.parametrize(("total", "dims", "same_place", "same_content", "expected"), [
    (10, 3, True, False, set()),
    (0, 3, True, False, {Alert.StoreEmpty}),
    (4, 3, True, False, {Alert.MemoryCountDrop}),
    (10, 5, True, False, {Alert.EmbedderMismatch}),
    (0, 5, False, False, {Alert.StoreEmpty, Alert.StoreReplaced, Alert.EmbedderMismatch}),
    (10, 3, False, False, {Alert.StoreReplaced}),
    (10, 3, False, True, set()),
])
def test_assess_table(total: int, dims: int, same_place: bool, same_content: bool,
                      expected: set[Alert]) -> None:
    here = TableIdentity("1", "db", 5, 7, dims)
    ledger = _ledger(10, here.store_id if same_place else "mem0:pg-1:db-4:table-6",
                     recent=[((datetime.now(UTC) - timedelta(hours=1)).isoformat(), 10)])
    verdict = assess_table(TableObservation(here, total, "memories"), ledger, 0.5,
                           same_content=same_content)
    assert {f.alert for f in verdict.firing()} == expected
    assert (verdict.accept is not None) == (not expected or expected == {
        Alert.MemoryCountDrop})


def test_the_same_memories_in_a_new_database_are_a_move_not_a_replacement(
        pg_server: Any, pg_url: str, tmp_path: Path) -> None:
    """mem0's upgrade guide: pg_dumpall, recreate, restore. Another database, the same rows."""
    mem0_table(pg_url, 6)
    settings = load_settings({"data_dir": tmp_path / "data",
                              "backup_urls": [str(tmp_path / "nas")]})
    first = Watcher(settings, pg_url)
    try:
        assert not first.check().firing()
    finally:
        first.close()
    name = "moved_" + uuid.uuid4().hex[:8]
    pg_server.psql(f"CREATE DATABASE {name};")
    pg_server.psql(f"\\c {name}\nCREATE EXTENSION IF NOT EXISTS vector;")
    moved = pg_server.get_uri(name)
    with psycopg.connect(pg_url) as old, psycopg.connect(moved, autocommit=True) as new:
        new.execute("CREATE TABLE memories (id uuid PRIMARY KEY, vector vector(3), "
                    "payload jsonb)")
        for row in old.execute("SELECT id, vector::text, payload::text FROM memories"):
            new.execute("INSERT INTO memories VALUES (%s, %s, %s)", row)
    again = Watcher(settings, moved)
    try:
        assert not again.check().firing()
        assert again.ledger is not None and "moved" in (again.ledger.note or "")
        assert again.store.journal(0) == []  # nothing changed: nothing journaled
        with psycopg.connect(moved, autocommit=True) as conn:  # a real change is still one
            conn.execute("UPDATE memories SET payload = payload || '{\"user_id\": \"zed\"}' "
                         "WHERE id = (SELECT id FROM memories LIMIT 1)")
        assert not again.check().firing()
        assert again.store.counts() == {"user:alice": 5, "user:zed": 1}
    finally:
        again.close()
    pg_server.psql(f"DROP DATABASE {name} WITH (FORCE);")


def test_without_a_readable_ledger_the_mirror_still_knows(pg_url: str, tmp_path: Path) -> None:
    """The backup destination gone (unmounted NAS) and the table truncated: the watcher
    compares with its mirror, alerts, and keeps the memories."""
    mem0_table(pg_url, 3)
    nas = tmp_path / "nas"
    settings = load_settings({"data_dir": tmp_path / "data", "backup_urls": [str(nas)]})
    first = Watcher(settings, pg_url)
    try:
        assert not first.check().firing()
    finally:
        first.close()
    import shutil

    shutil.rmtree(nas)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("TRUNCATE memories")
    again = Watcher(settings, pg_url)
    try:
        assert Alert.StoreEmpty in {f.alert for f in again.check().firing()}
        assert again.store.total() == 3
    finally:
        again.close()


def test_a_backup_that_cannot_be_written_is_backup_failing(pg_url: str, tmp_path: Path) -> None:
    mem0_table(pg_url, 2)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the backup folder should be")
    settings = load_settings({"data_dir": tmp_path / "data", "backup_urls": [str(blocked)]})
    watcher = Watcher(settings, pg_url)
    try:
        watcher.check()
        results = watcher.scheduler.snapshot_now()
        assert [r.status for r in results] == ["failed"]
        assert Alert.BackupFailing in {f.alert for f in watcher.check().firing()}
        assert Alert.BackupFailing in watcher.alerts.firing()
    finally:
        watcher.close()


def test_one_watcher_per_mirror(pg_url: str, tmp_path: Path) -> None:
    from memvault.errors import MemvaultError

    settings = load_settings({"data_dir": tmp_path / "data",
                              "backup_urls": [str(tmp_path / "nas")]})
    first = Watcher(settings, pg_url)
    try:
        with pytest.raises(MemvaultError, match="memvault watch mem0"):
            Watcher(settings, pg_url)
    finally:
        first.close()
    Watcher(settings, pg_url).close()  # free again


def test_watch_refuses_to_listen_beyond_loopback_without_a_key(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from memvault.cli import app

    done = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "watch", "mem0", "--dsn",
                                    "postgresql://x@127.0.0.1:1/none", "--host", "0.0.0.0"])
    assert done.exit_code == 1
    assert "MEMVAULT_ADMIN_API_KEY" in done.output


def test_restore_to_mem0_picks_the_watched_lineage_beside_memvaults_own(
        pg_server: Any, pg_url: str, tmp_path: Path, local_embedder: Any) -> None:
    from memvault.backup.snapshot import create_backup
    from memvault.memory import Memory
    from memvault.watch import restore_to_mem0

    nas = str(tmp_path / "nas")
    own = load_settings({"data_dir": tmp_path / "own", "backup_urls": [nas],
                         "database_url": f"sqlite:///{tmp_path / 'own.db'}"})
    with Memory(own, embedder=local_embedder) as memory:
        memory.add("memvault's own memory", user_id="x", infer=False)
        assert [r.status for r in create_backup(memory.store, own)] == ["valid"]
    ids = mem0_table(pg_url, 3)
    settings = load_settings({"data_dir": tmp_path / "data", "backup_urls": [nas]})
    watcher = Watcher(settings, pg_url)
    try:
        watcher.check()
        assert [r.status for r in watcher.scheduler.snapshot_now()] == ["valid"]
    finally:
        watcher.close()
    name = "to_" + uuid.uuid4().hex[:8]
    pg_server.psql(f"CREATE DATABASE {name};")
    pg_server.psql(f"\\c {name}\nCREATE EXTENSION IF NOT EXISTS vector;")
    report = restore_to_mem0(settings, pg_server.get_uri(name))
    assert report.counts == {"user:alice": 3}
    with psycopg.connect(pg_server.get_uri(name)) as conn:
        assert {str(r[0]) for r in conn.execute("SELECT id FROM memories")} == set(ids)
    pg_server.psql(f"DROP DATABASE {name} WITH (FORCE);")


def test_a_new_mirror_continues_the_lineage_a_lost_one_left(pg_url: str, tmp_path: Path) -> None:
    """`docker compose down -v` takes the watcher's volume with mem0's: the new watcher
    still knows, from the backups, what mem0's table held."""
    import shutil

    mem0_table(pg_url, 4)
    settings = load_settings({"data_dir": tmp_path / "data",
                              "backup_urls": [str(tmp_path / "nas")]})
    first = Watcher(settings, pg_url)
    try:
        first.check()
        assert [r.status for r in first.scheduler.snapshot_now()] == ["valid"]
    finally:
        first.close()
    shutil.rmtree(tmp_path / "data")  # the mirror is gone
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("TRUNCATE memories")
    fresh = Watcher(settings, pg_url)
    try:
        assert Alert.StoreEmpty in {f.alert for f in fresh.check().firing()}
    finally:
        fresh.close()
    shutil.rmtree(tmp_path / "data")
    mem0_table(pg_url, 4)
    fine = Watcher(settings, pg_url)
    try:
        assert not fine.check().firing()
        assert fine.ledger is not None and "continues lineage" in (fine.ledger.note or "")
    finally:
        fine.close()


def test_a_mirror_that_cannot_be_written_is_backup_failing(pg_url: str, tmp_path: Path) -> None:
    mem0_table(pg_url, 2)
    settings = load_settings({"data_dir": tmp_path / "data",
                              "backup_urls": [str(tmp_path / "nas")]})
    watcher = Watcher(settings, pg_url)
    try:
        watcher.check()
        mem0_table(pg_url, 1, user="bob")
        watcher.store.close()  # the mirror's database is gone from under the watcher
        verdict = watcher.check()
        [failing] = [f for f in verdict.firing() if f.alert == Alert.BackupFailing]
        assert "mirror" in failing.summary
    finally:
        watcher.table.close()
        if watcher.writer_lock is not None:
            watcher.writer_lock.release()


def test_a_memvault_backup_goes_into_mem0_without_touching_its_ledger(
        pg_server: Any, tmp_path: Path, local_embedder: Any) -> None:
    from memvault.backup.destinations import open_destinations
    from memvault.backup.snapshot import create_backup
    from memvault.guard.ledger import read_ledger
    from memvault.memory import Memory
    from memvault.store import text_hash
    from memvault.watch import restore_to_mem0

    own = load_settings({"data_dir": tmp_path / "own", "backup_urls": [str(tmp_path / "nas")],
                         "database_url": f"sqlite:///{tmp_path / 'own.db'}"})
    with Memory(own, embedder=local_embedder) as memory:
        added = memory.add("memvault remembers tea", user_id="x", infer=False,
                           metadata={"k": 1})
        lineage = memory.store.meta().lineage_id
        assert [r.status for r in create_backup(memory.store, own)] == ["valid"]
    dests = open_destinations(own)
    from memvault.guard.ledger import LedgerRecord, write_ledger

    write_ledger(dests, LedgerRecord(lineage_id=lineage, store_id="own", backend="sqlite",
                                     location="own.db", active_embedder=None, seq=1,
                                     memories=1, namespaces={"user:x": 1},
                                     observed_at=datetime.now(UTC).isoformat()))
    name = "mv_" + uuid.uuid4().hex[:8]
    pg_server.psql(f"CREATE DATABASE {name};")
    pg_server.psql(f"\\c {name}\nCREATE EXTENSION IF NOT EXISTS vector;")
    restore_to_mem0(own, pg_server.get_uri(name), embedder=local_embedder)
    with psycopg.connect(pg_server.get_uri(name)) as conn:
        [(memory_id, payload)] = conn.execute("SELECT id::text, payload FROM memories").fetchall()
    assert memory_id == added["results"][0]["id"]
    assert payload["data"] == "memvault remembers tea" and payload["user_id"] == "x"
    assert payload["hash"] == text_hash("memvault remembers tea") and payload["k"] == 1
    assert read_ledger(dests, lineage)[0].backend == "sqlite"  # memvault's own, untouched
    pg_server.psql(f"DROP DATABASE {name} WITH (FORCE);")


def test_a_new_memvault_store_never_takes_a_watched_mem0_lineage(
        pg_url: str, tmp_path: Path, local_embedder: Any) -> None:
    """A memvault server started empty on a destination shared with a stopped watcher: the
    watched lineage is not the store it replaces (no restore of mem0's memories into it)."""
    from memvault.guard.watchdog import Guard
    from memvault.memory import Memory

    nas = str(tmp_path / "nas")
    mem0_table(pg_url, 3)
    watched = load_settings({"data_dir": tmp_path / "watch", "backup_urls": [nas]})
    watcher = Watcher(watched, pg_url)
    try:
        watcher.check()
        assert [r.status for r in watcher.scheduler.snapshot_now()] == ["valid"]
        watcher.scheduler.shipper.stop()  # its head says the writer is gone
    finally:
        watcher.close()
    own = load_settings({"data_dir": tmp_path / "own", "backup_urls": [nas],
                         "database_url": f"sqlite:///{tmp_path / 'own.db'}"})
    with Memory(own, embedder=local_embedder) as memory:
        guard = Guard(own, memory)
        verdict = guard.check()
        assert not [f for f in verdict.firing() if f.alert == Alert.StoreEmpty], verdict
        assert memory.store.total() == 0 and guard.restore_lineage() is None
