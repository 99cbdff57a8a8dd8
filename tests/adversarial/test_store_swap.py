"""A SQLite store swapped under a running server: the file deleted (with -wal/-shm) or replaced
by another store's file. The open connection still reads the old inode; the guard notices
within one check and refuses, naming what it found."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.guard.api import Guard, guard_check
from memvault.memory import Memory
from memvault.server.app import app_over
from tests.test_guard import running


@pytest.fixture
def served(tmp_path: Path, local_embedder: LocalEmbedder) -> Any:
    path = tmp_path / "store" / "memvault.db"
    settings = load_settings({"data_dir": tmp_path / "data", "database_url": f"sqlite:///{path}"})
    with Memory(settings, embedder=local_embedder) as memory:
        memory.add("kept in the guarded file", user_id="alice", infer=False)
        yield settings, memory, path


def test_a_deleted_store_file_is_refused_within_one_check(served: Any) -> None:
    settings, memory, path = served
    with running(Guard(settings, memory)) as guard, \
            TestClient(app_over(settings, memory, guard=guard)) as client:
        assert not guard.verdict.firing()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        verdict = guard.check()  # one tick
        (finding,) = verdict.firing()
        assert finding.alert == "StoreUnreachable" and "was deleted" in finding.summary
        assert str(path) in finding.summary
        refused = client.post("/memories", json={"messages": "lost at restart", "user_id": "a"})
        assert refused.status_code == 503 and refused.json()["code"] == "store_refused"
        assert client.get("/readyz").status_code == 503
        assert guard_check(guard)["code"] == "StoreUnreachable"
        assert guard.backup_hold() is None  # the old inode's journal may still ship


def test_a_store_file_replaced_by_another_stores_is_refused_within_one_check(
    served: Any, tmp_path: Path, local_embedder: LocalEmbedder,
) -> None:
    settings, memory, path = served
    other_path = tmp_path / "other" / "memvault.db"
    other = load_settings({"data_dir": tmp_path / "d2", "database_url": f"sqlite:///{other_path}"})
    with Memory(other, embedder=local_embedder) as stranger:
        stranger.add("another store's memory", user_id="zed", infer=False)
        stranger_id = stranger.store.meta().store_id
    with running(Guard(settings, memory)) as guard:
        assert not guard.verdict.firing()
        staged = path.with_name("incoming.db")
        with sqlite3.connect(other_path) as src, sqlite3.connect(staged) as dst:
            src.backup(dst)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(staged, path)
        verdict = guard.check()
        (finding,) = verdict.firing()
        assert finding.alert == "StoreReplaced" and "was replaced" in finding.summary
        assert stranger_id in finding.summary  # read through a fresh connection
        assert guard.registry.get_sample_value("memvault_store_identity_ok") == 0
    shutil.rmtree(other_path.parent)
