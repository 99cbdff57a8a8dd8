"""Restore: journal replay, point in time, refusal, fallback, re-embedding, interruption."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard
from pydantic import SecretStr

from memvault.backup import (
    VALID,
    EncryptionKeyError,
    JournalShipper,
    RestoreRefused,
    create_backup,
    open_destinations,
    plan_restore,
    restore_incomplete,
    run_restore,
)
from memvault.backup.errors import RestoreLoss
from memvault.config import Settings
from memvault.embed.local import LocalEmbedder
from memvault.errors import StoreError
from memvault.memory import Memory
from memvault.store import Store, open_store, utc_now
from tests.helpers import backup_folder
from tests.peers.embedding_server import EmbeddingServer

ROOT = Path(__file__).resolve().parents[1]


def add_texts(memory: Memory, n: int, user: str = "alice", prefix: str = "fact") -> None:
    memory.add([{"role": "user", "content": f"{prefix} {i} about {user}"} for i in range(n)],
               user_id=user, infer=False)


def backup_ok(memory: Memory, settings: Settings) -> Any:
    (result,) = create_backup(memory.store, settings)
    assert result.status == VALID, result.reasons
    return result


def test_restore_replays_the_shipped_journal(memory: Memory, settings: Settings,
                                             target: Store, target_settings: Settings,
                                             local_embedder: LocalEmbedder) -> None:
    add_texts(memory, 10, "alice")
    add_texts(memory, 5, "bob")
    snapshot = backup_ok(memory, settings)
    shipper = JournalShipper(memory.store, settings)
    add_texts(memory, 3, "carol")
    first = memory.get_all(user_id="alice", top_k=100)["results"]
    memory.update(first[0]["id"], "alice moved to Porto")
    memory.delete(first[1]["id"])
    assert shipper.ship() == 1
    report = run_restore(target, target_settings, local_embedder)
    assert report.plan.manifest.id == snapshot.id
    assert report.replayed == 5 and report.counts == memory.store.counts()
    assert target.get(first[0]["id"]).memory == "alice moved to Porto"
    assert target.get(first[1]["id"]) is None
    assert target.meta().lineage_id == memory.store.meta().lineage_id
    assert target.last_seq() >= memory.store.last_seq()  # numbering continues the lineage
    assert restore_incomplete(target) is None
    with Memory(target_settings, store=target, embedder=local_embedder) as restored:
        hits = restored.search("where does alice live? Porto", user_id="alice", top_k=1)
        assert hits["results"][0]["memory"] == "alice moved to Porto"


def test_restore_to_a_point_in_time(memory: Memory, settings: Settings, target: Store,
                                    target_settings: Settings,
                                    local_embedder: LocalEmbedder) -> None:
    add_texts(memory, 4)
    backup_ok(memory, settings)
    memory.add("written before the mistake", user_id="alice", infer=False)
    time.sleep(0.05)
    moment = utc_now()
    time.sleep(0.05)
    memory.add("written after the mistake", user_id="alice", infer=False)
    JournalShipper(memory.store, settings).ship()
    plan = plan_restore(target_settings, "latest", moment)
    assert plan.to_json()["journal"]["entries"] == 1
    report = run_restore(target, target_settings, local_embedder, at=moment)
    texts = {r.memory for r in target.list(None)}
    assert "written before the mistake" in texts
    assert "written after the mistake" not in texts
    assert report.counts == {"user:alice": 5}


def test_restore_refuses_a_non_empty_target_unless_yes(memory: Memory, settings: Settings,
                                                       target: Store, target_settings: Settings,
                                                       local_embedder: LocalEmbedder) -> None:
    add_texts(memory, 6)
    backup_ok(memory, settings)
    other = Memory(target_settings, store=target, embedder=local_embedder)  # closed by fixture
    other.add("precious unrelated memory", user_id="zed", infer=False)
    with pytest.raises(RestoreRefused, match="holds 1 memories"):
        run_restore(target, target_settings, local_embedder)
    assert target.counts() == {"user:zed": 1}  # untouched
    report = run_restore(target, target_settings, local_embedder, yes=True)
    assert report.counts == {"user:alice": 6}
    assert [e.op for e in target.journal(0, 100)].count("DELETE") == 1  # journaled, recoverable


def test_restore_falls_back_from_a_damaged_backup(memory: Memory, settings: Settings,
                                                  target: Store, target_settings: Settings,
                                                  local_embedder: LocalEmbedder) -> None:
    add_texts(memory, 8)
    older = backup_ok(memory, settings)
    shipper = JournalShipper(memory.store, settings)
    add_texts(memory, 4, "bob")
    shipper.ship()
    newer = backup_ok(memory, settings)
    add_texts(memory, 2, "carol")
    shipper.ship()
    damaged = backup_folder(settings.backup_urls[0], newer.id) / "memories.jsonl.zst"
    data = bytearray(damaged.read_bytes())
    data[5] ^= 0x01
    damaged.write_bytes(bytes(data))
    with pytest.raises(RestoreRefused, match="damaged"):
        run_restore(target, target_settings, local_embedder, newer.id)
    assert target.total() == 0 and restore_incomplete(target) is None
    report = run_restore(target, target_settings, local_embedder)
    assert report.plan.manifest.id == older.id
    assert newer.id in report.plan.skipped[0] and "memories.jsonl.zst" in report.plan.skipped[0]
    assert report.counts == memory.store.counts()  # the journal bridges the gap


def test_restore_reembeds_for_a_different_embedder(memory: Memory, settings: Settings,
                                                   target_settings: Settings) -> None:
    add_texts(memory, 6, "alice")
    memory.add("the cat sleeps on the warm windowsill", user_id="alice", infer=False)
    backup_ok(memory, settings)
    from memvault.embed import make_embedder

    with EmbeddingServer(dims=48) as server:
        switched = target_settings.model_copy(update={"embedder": "openai:other-model",
                                                      "embedder_url": server.url + "/v1"})
        embedder = make_embedder(switched.embedder, switched)
        plan = plan_restore(switched, configured=embedder.identity())
        assert plan.reembed and plan.to_json()["embedder"]["configured"].endswith(":48")
        store = open_store(switched)
        report = run_restore(store, switched, embedder)
        assert report.counts == {"user:alice": 7}
        assert store.meta().active_embedder == embedder.identity().key
        assert store.vector_counts()[embedder.identity().key] == 7
        with Memory(switched, store=store, embedder=embedder) as restored:
            hits = restored.search("the cat sleeps on the warm windowsill", user_id="alice",
                                   top_k=1)
            assert hits["results"][0]["memory"] == "the cat sleeps on the warm windowsill"


def test_restore_killed_halfway_is_refused_then_rerun(memory: Memory, settings: Settings,
                                                      target_settings: Settings,
                                                      local_embedder: LocalEmbedder,
                                                      tmp_path: Path) -> None:
    add_texts(memory, 12)
    backup_ok(memory, settings)
    marker = tmp_path / "loaded"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from memvault.backup import restore as restore_mod
        from memvault.config import load_settings
        from memvault.embed import make_embedder
        from memvault.store import open_store

        original = restore_mod._load
        def load_then_hang(*args, **kwargs):
            loaded = original(*args, **kwargs)
            Path({str(marker)!r}).write_text(str(loaded))
            time.sleep(60)  # killed here: data loaded, counts not yet verified
        restore_mod._load = load_then_hang
        settings = load_settings({{"data_dir": {str(settings.data_dir)!r},
                                   "database_url": {target_settings.database_url!r}}})
        restore_mod.run_restore(open_store(settings), settings,
                                make_embedder("local", settings))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the restore process died on its own"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    store = open_store(target_settings)
    try:
        assert restore_incomplete(store)["backup"]
        served = Memory(target_settings, store=store, embedder=local_embedder)
        with pytest.raises(StoreError, match="unfinished restore"):
            served.search("fact", user_id="alice")
        (refused,) = create_backup(store, target_settings)
        assert refused.status == "failed" and "unfinished restore" in refused.reasons[0]
        report = run_restore(store, target_settings, local_embedder)  # no --yes needed
        assert report.counts == {"user:alice": 12}
        assert restore_incomplete(store) is None
    finally:
        store.close()


def test_restore_with_the_wrong_key_names_the_key(memory: Memory, settings: Settings,
                                                  target: Store, target_settings: Settings,
                                                  local_embedder: LocalEmbedder) -> None:
    add_texts(memory, 3)
    keyed = settings.model_copy(update={"backup_encryption_key": SecretStr("right key")})
    (result,) = create_backup(memory.store, keyed)
    assert result.status == VALID
    wrong = target_settings.model_copy(update={"backup_encryption_key": SecretStr("wrong")})
    with pytest.raises(EncryptionKeyError, match="another key"):
        run_restore(target, wrong, local_embedder)
    assert target.total() == 0
    right = target_settings.model_copy(update={"backup_encryption_key": SecretStr("right key")})
    assert run_restore(target, right, local_embedder).counts == {"user:alice": 3}
    assert open_destinations(right)


def test_restore_stops_at_a_journal_gap_and_says_so(memory: Memory, settings: Settings,
                                                    target: Store, target_settings: Settings,
                                                    local_embedder: LocalEmbedder) -> None:
    add_texts(memory, 3)
    backup_ok(memory, settings)
    shipper = JournalShipper(memory.store, settings)
    for text in ("first shipped", "lost with its segment", "after the gap"):
        memory.add(text, user_id="alice", infer=False)
        assert shipper.ship() == 1
    segments = sorted(Path(settings.backup_urls[0]).rglob("*.jsonl.zst"))
    segments[1].unlink()
    plan = plan_restore(target_settings)
    assert plan.to_json()["journal"]["entries"] == 1
    assert "journal gap" in plan.chain.faults[0]
    assert plan.loss.lost and plan.to_json()["loss"]["namespaces"] == {"user:alice": {"add": 1}}
    # Short of what the lineage reached: refused (nothing written) unless the loss is allowed.
    with pytest.raises(RestoreLoss, match=r"seqs \d+\.\.\d+ are lost") as refused:
        run_restore(target, target_settings, local_embedder)
    assert "user:alice 1 add" in refused.value.message
    assert target.total() == 0 and restore_incomplete(target) is None
    report = run_restore(target, target_settings, local_embedder, allow_loss=True)
    texts = {r.memory for r in target.list(None)}
    assert "first shipped" in texts and "after the gap" not in texts
    assert report.counts == {"user:alice": 4}
    assert report.to_json()["plan"]["loss"]["lost"] is True
    # Numbering continues past the lost seqs: they are never handed out twice.
    assert target.last_seq() >= memory.store.last_seq()


def test_format_1_backups_and_segments_are_still_restored(memory: Memory, settings: Settings,
                                                          target: Store,
                                                          target_settings: Settings,
                                                          local_embedder: LocalEmbedder) -> None:
    """A destination written by format 1 (`snapshots/<id>/`, `journal/<lineage>/`) restores,
    and a chain continues from format-1 segments into format-2 ones."""
    add_texts(memory, 5)
    snapshot = backup_ok(memory, settings)
    shipper = JournalShipper(memory.store, settings)
    memory.add("shipped in format 1", user_id="alice", infer=False)
    assert shipper.ship() == 1
    root = Path(settings.backup_urls[0])
    lineage = memory.store.meta().lineage_id
    folder = backup_folder(root, snapshot.id)
    legacy = root / "snapshots" / snapshot.id
    legacy.parent.mkdir(parents=True)
    folder.rename(legacy)
    manifest = json.loads((legacy / "manifest.json").read_text())
    manifest["format_version"] = 1
    del manifest["manifest_sha256"]
    # Format 1 wrote frames without content checksums, followed by an empty frame.
    memories = legacy / "memories.jsonl.zst"
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(memories.read_bytes())
    old = zstandard.ZstdCompressor(write_checksum=False)
    memories.write_bytes(old.compress(plain) + old.compress(b""))
    manifest["files"]["memories.jsonl.zst"] = {
        "size": memories.stat().st_size,
        "sha256": hashlib.sha256(memories.read_bytes()).hexdigest()}
    (legacy / "manifest.json").write_text(json.dumps(manifest))
    (segment,) = (root / "lineages" / lineage / "journal").iterdir()
    (root / "journal" / lineage).mkdir(parents=True)
    segment.rename(root / "journal" / lineage / segment.name)
    memory.add("shipped in format 2", user_id="alice", infer=False)
    assert shipper.ship() == 1
    assert backup_folder(root, snapshot.id) == legacy
    report = run_restore(target, target_settings, local_embedder)
    assert report.plan.manifest.id == snapshot.id and report.replayed == 2
    texts = {r.memory for r in target.list(None)}
    assert {"shipped in format 1", "shipped in format 2"} <= texts
    assert report.counts == memory.store.counts()
