"""Two replicas on one PostgreSQL whose leadership moves while they run: the backup-side alerts
(here BackupFailing) still go out, exactly once.

The guard alerts only where it leads and reports on the backup scheduler of its own process. With
an election per job, the backup lock could move to the other replica while the guard lock stayed:
the replica running the backups did not alert, the alerting one ran no backups, and a failing
backup was never reported. The leadership here moves the way it does in production: the session
holding the backup jobs' lock dies (a network blip, a killed connection)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.runtime import Runtime
from memvault.store.leader import JOBS_ELECTION, lock_key
from tests.peers.http_peer import HTTPPeer


@pytest.fixture
def webhook() -> Iterator[HTTPPeer]:
    peer = HTTPPeer({("POST", "/hook"): lambda body, headers: (200, {"ok": True})})
    with peer:
        yield peer


def fired(webhook: HTTPPeer, alert: str) -> list[str]:
    titles = [r["body"].get("title", "") for r in webhook.requests if r["path"] == "/hook"]
    return [t for t in titles if t.startswith(f"[FIRING] {alert}")]


def wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def kill_lock_holder(url: str, name: str) -> int:
    """Terminate the session holding the advisory lock of the election `name`."""
    key = lock_key(name) & 0xFFFFFFFFFFFFFFFF
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s"
            " AND objid = %s AND objsubid = 1 AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())", (key >> 32, key & 0xFFFFFFFF)).fetchone()
        assert row is not None, f"nobody holds the {name} lock"
        conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        return int(row[0])


def test_backup_alerts_follow_the_leader_that_runs_the_backups(
    pg_url: str, tmp_path: Path, local_embedder: LocalEmbedder, webhook: HTTPPeer,
) -> None:
    breakable = tmp_path / "nas"
    breakable.mkdir()
    settings = load_settings({
        "data_dir": tmp_path / "data", "database_url": pg_url,
        "backup_urls": f"{tmp_path / 'data' / 'backups'},{breakable}",
        "alert_urls": f"json://127.0.0.1:{webhook.port}/hook"})
    with Memory(settings, embedder=local_embedder) as a_memory, \
            Memory(settings, embedder=local_embedder) as b_memory:
        a_memory.add("worth backing up", user_id="alice", infer=False)
        a, b = Runtime(settings, a_memory), Runtime(settings, b_memory)
        try:
            a.start()
            assert a.scheduler is not None and b.scheduler is not None and b.guard is not None
            # A leads: its first scheduled snapshot (none exists yet) lands everywhere.
            wait_for(lambda: a.scheduler.last_valid_mono is not None, 60)
            b.start()
            assert not b.scheduler.is_leader()
            # A's session holding the backup jobs' lock dies; B takes the backups over.
            kill_lock_holder(pg_url, JOBS_ELECTION)
            wait_for(lambda: b.scheduler.is_leader(), 15)
            assert not a.scheduler.is_leader()
            # The NAS goes bad; the next backup run (on B, the replica running them) fails.
            shutil.rmtree(breakable)
            breakable.write_text("a file where the destination should be")
            b.scheduler.snapshot_now()
            assert b.scheduler.failing and str(breakable) in b.scheduler.failing
            wait_for(lambda: fired(webhook, "BackupFailing"), 3 * b.guard.tick_seconds)
            time.sleep(2 * b.guard.tick_seconds)  # both guards check again: no repeat
            assert len(fired(webhook, "BackupFailing")) == 1, fired(webhook, "BackupFailing")
        finally:
            b.close()
            a.close()
