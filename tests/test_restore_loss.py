"""Restore never ends short of what the backups promise without saying so: a damaged newest
segment, a gap behind a damaged newer snapshot, a chain that ends before the lineage head or
the caller's high-water mark; which lineage it takes; --at across a clock stepped back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from memvault.backup import (
    VALID,
    JournalShipper,
    RestoreLoss,
    RestoreRefused,
    create_backup,
    open_destinations,
    plan_restore,
    restore_incomplete,
    run_restore,
    verify_backups,
)
from memvault.backup.journal import list_segments
from memvault.config import Settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.store import Store
from tests.helpers import backup_folder, record


def add(memory: Memory, texts: list[str], user: str = "alice") -> None:
    for text in texts:
        memory.add(text, user_id=user, infer=False)


def snapshot(memory: Memory, settings: Settings) -> str:
    (result,) = create_backup(memory.store, settings)
    assert result.status == VALID, result.reasons
    return str(result.id)


def segment_paths(settings: Settings, memory: Memory) -> list[Path]:
    dest = open_destinations(settings)[0]
    root = Path(settings.backup_urls[0])
    return [root / r.key for r in list_segments(dest, memory.store.meta().lineage_id)]


def test_a_flipped_bit_in_the_newest_segment_is_never_silent(
        memory: Memory, settings: Settings, target: Store, target_settings: Settings,
        local_embedder: LocalEmbedder) -> None:
    add(memory, ["one", "two"])
    snapshot(memory, settings)
    shipper = JournalShipper(memory.store, settings)
    add(memory, ["shipped first"])
    shipper.ship()
    add(memory, ["shipped last", "and its neighbour"])
    shipper.ship()
    shipper.stop()
    newest = segment_paths(settings, memory)[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x04
    newest.write_bytes(bytes(data))
    report = verify_backups(open_destinations(settings), None, read_data=True)
    assert not report.ok and any(newest.name in (f.file or "") for f in report.faults)
    with pytest.raises(RestoreLoss, match="are lost"):
        run_restore(target, target_settings, local_embedder)
    assert target.total() == 0 and restore_incomplete(target) is None


def test_a_gap_behind_a_damaged_newer_snapshot_is_refused_and_named(
        memory: Memory, settings: Settings, target: Store, target_settings: Settings,
        local_embedder: LocalEmbedder) -> None:
    add(memory, ["a1", "a2"])
    older = snapshot(memory, settings)
    add(memory, ["b1", "b2", "b3"], user="bob")
    newer = snapshot(memory, settings)
    for path in segment_paths(settings, memory):  # the journal between them is gone
        path.unlink()
    memories = backup_folder(settings.backup_urls[0], newer) / "memories.jsonl.zst"
    data = bytearray(memories.read_bytes())
    data[len(data) // 2] ^= 0x01
    memories.write_bytes(bytes(data))
    report = verify_backups(open_destinations(settings), None, every=True, read_data=True)
    assert any(f.file == "memories.jsonl.zst" and f.backup == newer for f in report.faults)
    assert any("journal gap" in f.fault and f.backup == older for f in report.faults)
    with pytest.raises(RestoreLoss) as refused:
        run_restore(target, target_settings, local_embedder)
    message = refused.value.message
    assert f"damaged newer backup {newer}" in message and "user:bob 3" in message, message
    assert target.total() == 0
    report = run_restore(target, target_settings, local_embedder, allow_loss=True)
    assert report.plan.manifest.id == older and report.plan.skipped
    loss = report.to_json()["plan"]["loss"]
    assert loss["lost"] and loss["namespaces"]["user:bob"] == {
        "memories_short_of_newer_snapshot": 3}
    assert target.last_seq() >= memory.store.last_seq()


def test_a_chain_short_of_the_head_or_the_ledger_is_refused(
        memory: Memory, settings: Settings, target: Store, target_settings: Settings,
        local_embedder: LocalEmbedder) -> None:
    add(memory, ["kept"])
    snapshot(memory, settings)
    shipper = JournalShipper(memory.store, settings)
    add(memory, ["shipped"])
    shipper.ship()
    shipper.stop()
    last = memory.store.last_seq()
    # The caller (the guard's ledger) knows the lineage reached further than any backup.
    with pytest.raises(RestoreLoss, match=f"lineage reached {last + 5}"):
        run_restore(target, target_settings, local_embedder, high_water=last + 5)
    assert plan_restore(target_settings, high_water=last).loss.lost is False
    segment_paths(settings, memory)[-1].unlink()  # the head still says journal_upto=last
    with pytest.raises(RestoreLoss, match="lineage head journal_upto"):
        run_restore(target, target_settings, local_embedder)
    report = verify_backups(open_destinations(settings), None)
    assert any("head.json" in (f.file or "") and "are in no segment" in f.fault
               for f in report.faults), report.faults


def _second_store(tmp_path: Path, settings: Settings, embedder: LocalEmbedder) -> Memory:
    other = settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'other' / 'memvault.db'}"})
    return Memory(other, embedder=embedder)


def test_restore_takes_its_own_lineage_or_the_only_one_else_refuses(
        memory: Memory, settings: Settings, target: Store, target_settings: Settings,
        local_embedder: LocalEmbedder, tmp_path: Path) -> None:
    add(memory, ["prod 1", "prod 2"])
    snapshot(memory, settings)
    prod = memory.store.meta().lineage_id
    plan = plan_restore(target_settings, target_lineage=target.meta().lineage_id)
    assert plan.manifest.lineage_id == prod  # the only lineage with backups
    with _second_store(tmp_path, settings, local_embedder) as staging:
        add(staging, ["staging 1"], user="stage")
        snapshot(staging, settings)
        stage = staging.store.meta().lineage_id
        # Both stores restore their own lineage from the shared destination.
        own = plan_restore(settings, target_lineage=stage)
        assert own.manifest.lineage_id == stage
    with pytest.raises(RestoreRefused, match="several stores") as refused:
        run_restore(target, target_settings, local_embedder)
    assert prod in refused.value.message and stage in refused.value.message
    assert "--lineage" in (refused.value.hint or "")
    assert "2 memories" in refused.value.message
    report = run_restore(target, target_settings, local_embedder, lineage=prod)
    assert report.plan.manifest.lineage_id == prod and report.counts == {"user:alice": 2}


def test_latest_is_the_highest_seq_not_the_newest_clock(
        memory: Memory, settings: Settings, target_settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from memvault.backup import snapshot as snapshot_mod

    add(memory, ["one"])
    real = datetime.now

    class Ahead(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return real(UTC) + timedelta(days=400)

    monkeypatch.setattr(snapshot_mod, "datetime", Ahead)
    skewed = snapshot(memory, settings)  # stamped 400 days ahead
    monkeypatch.undo()
    add(memory, ["two"])
    newest = snapshot(memory, settings)
    assert plan_restore(target_settings).entry.id == newest != skewed


def test_at_follows_seq_order_across_a_clock_stepped_back(
        memory: Memory, settings: Settings, target: Store, target_settings: Settings,
        local_embedder: LocalEmbedder) -> None:
    add(memory, ["before"])
    snapshot(memory, settings)
    start = datetime.now(UTC) + timedelta(seconds=5)
    stamps = [start, start + timedelta(days=400), start + timedelta(seconds=1),
              start + timedelta(seconds=3)]
    active = memory.store.meta().active_embedder
    assert active is not None
    texts = ["e1", "e2 clock ahead", "e3 clock corrected", "e4 after T"]
    for text, stamp in zip(texts, stamps, strict=True):  # a writer whose clock jumps
        memory.store.add([record(text, created_at=stamp.isoformat(timespec="microseconds"))],
                         local_embedder.embed([text]), active, "test")
    JournalShipper(memory.store, settings).ship()
    at = start + timedelta(seconds=2)
    plan = plan_restore(target_settings, at=at)
    steps = plan.to_json()["journal"]["clock_steps_back"]
    assert len(steps) == 1 and steps[0]["previous_ts"].startswith(
        (start + timedelta(days=400)).isoformat()[:19])
    assert any("stamped earlier" in w for w in plan.warnings)
    run_restore(target, target_settings, local_embedder, at=at)
    assert {r.memory for r in target.list(None)} == {"before", *texts[:3]}
