"""`restore --catch-up` on SQLite: a store file put back from an older copy (what a standby
promoted behind is on PostgreSQL) gets the shipped journal after its own seq back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memvault.backup.shipper import JournalShipper
from memvault.cli import app
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory


def test_an_older_copy_of_the_store_catches_up_and_never_reuses_a_seq(
    tmp_path: Path, local_embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "store" / "memvault.db"
    settings = load_settings({"data_dir": tmp_path / "data", "database_url": f"sqlite:///{db}"})
    with Memory(settings, embedder=local_embedder) as memory:
        memory.add("in the old copy", user_id="alice", infer=False)
        old_seq = memory.store.last_seq()
    shutil.copytree(db.parent, tmp_path / "old")
    with Memory(settings, embedder=local_embedder) as memory:
        for i in range(4):
            memory.add(f"shipped {i}", user_id="alice", infer=False)
        memory.update(memory.get_all(user_id="alice")["results"][0]["id"], "shipped, edited")
        JournalShipper(memory.store, settings).ship()
        shipped_seq = memory.store.last_seq()
        expected = {m["id"]: m["memory"] for m in memory.get_all(user_id="alice")["results"]}
    shutil.rmtree(db.parent)
    shutil.copytree(tmp_path / "old", db.parent)
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", f"sqlite:///{db}")
    caught = CliRunner().invoke(app, ["restore", "--catch-up", "--json"])
    assert caught.exit_code == 0, caught.stdout + caught.stderr
    report = json.loads(caught.stdout)
    assert (report["store_seq"], report["upto_seq"]) == (old_seq, shipped_seq)
    assert report["replayed"] == shipped_seq - old_seq and report["lost"] is None
    with Memory(settings, embedder=local_embedder) as memory:
        got = {m["id"]: m["memory"] for m in memory.get_all(user_id="alice")["results"]}
        assert got == expected
        memory.add("after the catch-up", user_id="alice", infer=False)
        assert memory.store.last_seq() > shipped_seq  # numbering continues the lineage
