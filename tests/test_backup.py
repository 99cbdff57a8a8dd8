"""Snapshots, validation, retention, verify and journal shipping against real stores and disks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

from memvault.backup import (
    INCOMPLETE,
    SUSPICIOUS,
    VALID,
    BackupEntry,
    JournalShipper,
    RetentionRefused,
    apply_prune,
    create_backup,
    list_backups,
    open_destinations,
    plan_prune,
    verify_backups,
)
from memvault.backup.destinations import LocalDestination
from memvault.backup.format import Manifest
from memvault.config import Settings
from memvault.memory import Memory

ROOT = Path(__file__).resolve().parents[1]


def add_texts(memory: Memory, n: int, user: str = "alice", prefix: str = "fact") -> None:
    for start in range(0, n, 50):
        memory.add([{"role": "user", "content": f"{prefix} {i} about {user}"}
                    for i in range(start, min(n, start + 50))], user_id=user, infer=False)


def only(results: list[Any]) -> Any:
    assert len(results) == 1, results
    return results[0]


def backups(settings: Settings) -> list[BackupEntry]:
    return list_backups(open_destinations(settings)[0])


def backup_dir(settings: Settings, backup_id: str) -> Path:
    entry = next(e for e in backups(settings) if e.id == backup_id)
    return Path(settings.backup_urls[0]) / entry.folder


# ------------------------------------------------------------------ snapshot + open format


def test_snapshot_is_valid_and_readable_without_memvault(memory: Memory, settings: Settings
                                                          ) -> None:
    add_texts(memory, 12, "alice")
    add_texts(memory, 7, "bob")
    memory.add("agent note", agent_id="planner", infer=False)
    result = only(create_backup(memory.store, settings))
    assert result.status == VALID, result.reasons
    folder = backup_dir(settings, result.id)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "memvault-backup" and manifest["format_version"] == 2
    assert manifest["counts"] == {"agent:planner": 1, "user:alice": 12, "user:bob": 7}
    assert manifest["seq"] == memory.store.last_seq()
    assert manifest["store"]["store_id"] == memory.store.meta().store_id
    assert manifest["store"]["lineage_id"] == memory.store.meta().lineage_id
    assert manifest["validation"]["status"] == "valid"
    # Only zstd, json and numpy from here on: the format is open.
    import hashlib

    for name, info in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert len(data) == info["size"]
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(
        (folder / "memories.jsonl.zst").read_bytes()).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(r["memory"] for r in rows if r["user_id"] == "bob")[0] == "fact 0 about bob"
    assert {r["namespace"] for r in rows} == set(manifest["counts"])
    (embedder,) = manifest["embedders"]
    assert embedder["key"] == memory.embedder_identity().key
    assert len(embedder["identity"]["probes"]) == 4
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(
        (folder / embedder["vectors_file"]).read_bytes())
    vectors = np.frombuffer(raw, dtype="<f4").reshape(embedder["count"], embedder["dims"])
    ids = zstandard.ZstdDecompressor().decompressobj().decompress(
        (folder / embedder["ids_file"]).read_bytes()).decode().split()
    text_of = {r["id"]: r["memory"] for r in rows}
    query = memory.embedder.embed([text_of[ids[3]]])[0]
    assert int(np.argmax(vectors @ query)) == 3  # the stored vector belongs to that id


def test_snapshot_is_consistent_while_writes_go_on(memory: Memory, settings: Settings) -> None:
    add_texts(memory, 100, "alice")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set():
                memory.add(f"concurrent {i}", user_id="carol", infer=False)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        results = [only(create_backup(memory.store, settings)) for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    assert not errors
    for result in results:
        assert result.status == VALID, result.reasons
        # The snapshot holds exactly what the journal says existed at its seq.
        added = sum(1 for e in memory.store.journal(0, 100_000)
                    if e.seq <= result.manifest.seq and e.op == "ADD")
        assert result.manifest.total == added


# ------------------------------------------------------------------ validation


def test_empty_store_after_data_is_suspicious_never_valid(memory: Memory, settings: Settings
                                                          ) -> None:
    add_texts(memory, 10)
    good = only(create_backup(memory.store, settings))
    assert good.status == VALID
    memory.reset(safety_snapshot=False)  # a pre-reset snapshot would be a second valid one
    for _ in range(3):  # nightly backups of the emptied store
        bad = only(create_backup(memory.store, settings))
        assert bad.status == SUSPICIOUS
        assert any("empty" in reason for reason in bad.reasons), bad.reasons
    entries = backups(settings)
    assert [e.status for e in entries] == [VALID, SUSPICIOUS, SUSPICIOUS, SUSPICIOUS]
    # Retention that keeps only one backup keeps the valid one, never a suspicious one.
    plan = plan_prune(open_destinations(settings)[0], {"last": 1})
    assert good.id in plan.keep and "newest valid backup" in plan.keep[good.id]
    apply_prune(plan)
    assert good.id in [e.id for e in backups(settings) if e.status == VALID]


def test_large_drop_is_suspicious_unless_accepted(memory: Memory, settings: Settings) -> None:
    add_texts(memory, 20)
    assert only(create_backup(memory.store, settings)).status == VALID
    ids = [r["id"] for r in memory.get_all(user_id="alice", top_k=100)["results"]]
    for memory_id in ids[:15]:
        memory.delete(memory_id)
    dropped = only(create_backup(memory.store, settings))
    assert dropped.status == SUSPICIOUS
    assert "fewer than 50%" in dropped.reasons[0] and "--accept-drop" in dropped.reasons[0]
    accepted = only(create_backup(memory.store, settings, accept_drop=True))
    assert accepted.status == VALID
    assert only(create_backup(memory.store, settings)).status == VALID  # new baseline


def test_replaced_empty_store_is_suspicious(memory: Memory, settings: Settings,
                                            tmp_path: Path) -> None:
    """The incident: a brand-new empty store (new lineage) backed up over good backups."""
    add_texts(memory, 10)
    assert only(create_backup(memory.store, settings)).status == VALID
    from memvault.store import open_store

    other = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'new.db'}"})
    fresh = open_store(other)
    try:
        result = only(create_backup(fresh, other))
    finally:
        fresh.close()
    assert result.status == SUSPICIOUS
    assert "fewer than" in result.reasons[0]


# ------------------------------------------------------------------ retention


def _fake_entry(dest: LocalDestination, when: datetime, status: str = VALID) -> BackupEntry:
    backup_id = f"{when:%Y%m%dT%H%M%S}Z-abcdef"
    manifest = Manifest(
        id=backup_id, store_id="s", lineage_id="l", backend="sqlite", seq=int(when.timestamp()),
        created_at=when.isoformat(), completed_at=when.isoformat(), memvault_version="0",
        counts={"user:a": 1}, active_embedder=None, embedders=[], files={}, encryption=None,
        validation={"status": status, "reasons": [] if status == VALID else ["x"]})
    return BackupEntry(backup_id, dest, status, manifest, [f"snapshots/{backup_id}/x"])


def test_retention_gfs_keeps_newest_and_buckets(tmp_path: Path) -> None:
    dest = LocalDestination(tmp_path)
    now = datetime(2026, 6, 30, 12, tzinfo=UTC)
    entries = [_fake_entry(dest, now - timedelta(hours=12 * i)) for i in range(120)]
    entries.append(_fake_entry(dest, now + timedelta(hours=1), SUSPICIOUS))
    plan = plan_prune(dest, {"last": 3, "daily": 5, "weekly": 3, "monthly": 2}, now, entries)
    newest = entries[0].id
    assert "newest valid backup" in plan.keep[newest]
    kept_valid = [e for e in entries if e.id in plan.keep and e.status == VALID]
    days = {e.created.date() for e in kept_valid if any(r.startswith("daily")
                                                        for r in plan.keep[e.id])}
    assert len(days) == 5
    assert sum(any(r.startswith("weekly") for r in plan.keep[e.id]) for e in kept_valid) == 3
    assert sum(any(r.startswith("monthly") for r in plan.keep[e.id]) for e in kept_valid) == 2
    assert entries[-1].id in plan.keep  # suspicious newer than every valid: kept to inspect
    assert len(plan.delete) == len(entries) - len(plan.keep)
    assert all(e.status == VALID for e in entries if e.id in plan.delete)


def test_retention_refuses_a_policy_keeping_nothing(tmp_path: Path) -> None:
    with pytest.raises(RetentionRefused, match="keeps no backups"):
        plan_prune(LocalDestination(tmp_path), {"last": 0, "daily": 0, "weekly": 0,
                                                "monthly": 0})


def test_suspicious_backups_never_push_out_valid_ones(tmp_path: Path) -> None:
    dest = LocalDestination(tmp_path)
    now = datetime(2026, 6, 30, 12, tzinfo=UTC)
    valid = [_fake_entry(dest, now - timedelta(days=30 + i)) for i in range(3)]
    suspicious = [_fake_entry(dest, now - timedelta(hours=i), SUSPICIOUS) for i in range(50)]
    plan = plan_prune(dest, {"last": 2}, now, valid + suspicious)
    assert valid[0].id in plan.keep and valid[1].id in plan.keep
    assert valid[2].id in plan.delete  # only the count of valid ones decides


# ------------------------------------------------------------------ verify: flipped bit, cut


def test_flipped_bit_and_truncated_file_are_named(memory: Memory, settings: Settings) -> None:
    add_texts(memory, 30)
    first = only(create_backup(memory.store, settings))
    second = only(create_backup(memory.store, settings))
    dests = open_destinations(settings)
    assert verify_backups(dests, None, every=True, read_data=True).ok
    vectors = backup_dir(settings, first.id) / "vectors-0.f32.zst"
    data = bytearray(vectors.read_bytes())
    data[len(data) // 2] ^= 0x10
    vectors.write_bytes(bytes(data))
    structure = verify_backups(dests, None, backup_id=first.id)
    assert structure.ok  # same size: only a full read can tell
    full = verify_backups(dests, None, backup_id=first.id, read_data=True)
    (fault,) = full.faults
    assert fault.backup == first.id and fault.file == "vectors-0.f32.zst"
    assert "sha256" in fault.fault
    memories = backup_dir(settings, second.id) / "memories.jsonl.zst"
    memories.write_bytes(memories.read_bytes()[:-7])
    cut = verify_backups(dests, None, backup_id=second.id)
    (fault,) = cut.faults
    assert fault.file == "memories.jsonl.zst" and "truncated" in fault.fault


# ------------------------------------------------------------------ kill -9 mid-snapshot


def test_kill_9_during_snapshot_leaves_no_valid_partial(memory: Memory, settings: Settings,
                                                        tmp_path: Path) -> None:
    add_texts(memory, 20)
    marker = tmp_path / "uploading"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from memvault.backup import destinations, create_backup
        from memvault.config import load_settings
        from memvault.store import open_store

        original = destinations.LocalDestination.put_file
        def slow_put(self, key, source):
            original(self, key, source)
            Path({str(marker)!r}).write_text(key)
            time.sleep(60)  # killed here, after the first file, before the manifest
        destinations.LocalDestination.put_file = slow_put
        settings = load_settings({{"data_dir": {str(settings.data_dir)!r},
                                   "database_url": {settings.database_url!r}}})
        create_backup(open_store(settings), settings)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the snapshot process died on its own"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.kill()  # SIGKILL
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    (entry,) = backups(settings)
    assert entry.status == INCOMPLETE
    report = verify_backups(open_destinations(settings), None, every=True)
    assert not report.ok and "never finished" in report.faults[0].fault
    assert only(create_backup(memory.store, settings)).status == VALID  # next run unaffected
    later = datetime.now(UTC) + timedelta(hours=2)
    plan = plan_prune(open_destinations(settings)[0], settings.backup_keep, later)
    assert plan.delete == {entry.id: "unfinished backup (no manifest)"}


# ------------------------------------------------------------------ full disk


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    yield mount
    if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=True)  # detach even if busy
        pytest.fail(f"{mount} was still in use after the test (a file left open)")


def test_full_disk_fails_loudly_and_marks_nothing_valid(memory: Memory, settings: Settings,
                                                        tiny_disk: Path) -> None:
    add_texts(memory, 80)  # 80 x 384 float32 = 120 KiB of vectors: more than the disk holds
    full = settings.model_copy(update={"backup_urls": [str(tiny_disk)]})
    result = only(create_backup(memory.store, full))
    assert result.status == "failed"
    assert "No space left on device" in result.reasons[0]
    assert not [e for e in list_backups(LocalDestination(tiny_disk)) if e.status == VALID]
    assert not list(tiny_disk.rglob("*.tmp-*"))  # temp files cleaned up


# ------------------------------------------------------------------ encryption


def test_encrypted_backup_and_wrong_key(memory: Memory, settings: Settings) -> None:
    from pydantic import SecretStr

    add_texts(memory, 10)
    secret = settings.model_copy(update={"backup_encryption_key": SecretStr("k" * 32)})
    result = only(create_backup(memory.store, secret))
    assert result.status == VALID, result.reasons
    stored = (backup_dir(settings, result.id) / "memories.jsonl.zst").read_bytes()
    assert stored.startswith(b"MVENC") and b"fact" not in stored
    from memvault.backup.crypto import Cipher

    dests = open_destinations(settings)
    assert verify_backups(dests, Cipher("k" * 32), read_data=True).ok
    wrong = verify_backups(dests, Cipher("wrong key"), read_data=True)
    assert "encrypted with another key" in wrong.faults[0].fault
    missing = verify_backups(dests, None, read_data=True)
    assert "no key is configured" in missing.faults[0].fault


# ------------------------------------------------------------------ journal shipping


def test_journal_segments_chain_and_detect_gaps(memory: Memory, settings: Settings) -> None:
    add_texts(memory, 5)
    assert only(create_backup(memory.store, settings)).status == VALID
    shipper = JournalShipper(memory.store, settings)
    assert shipper.ship() == 0  # nothing after the snapshot yet
    for round_ in range(3):
        memory.add(f"round {round_}", user_id="alice", infer=False)
        assert shipper.ship() == 1
    dests = open_destinations(settings)
    report = verify_backups(dests, None)
    assert report.ok, report.faults
    (journal,) = report.journal
    assert journal["segments"] == 3 and journal["upto_seq"] == memory.store.last_seq()
    segments = sorted(Path(settings.backup_urls[0]).rglob("*.jsonl.zst"))
    # A replaced segment breaks the checksum chain.
    original = segments[1].read_bytes()
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(original).decode()
    segments[1].write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(
        lines.replace("round 1", "round X").encode()))
    broken = verify_backups(dests, None)
    assert any("chain broken" in f.fault and segments[2].name in f.fault for f in broken.faults)
    segments[1].write_bytes(original)
    segments[1].unlink()  # a lost segment is a gap
    gap = verify_backups(dests, None)
    assert any("journal gap" in f.fault for f in gap.faults), gap.faults


def test_shipper_resumes_its_chain_after_restart(memory: Memory, settings: Settings) -> None:
    add_texts(memory, 3)
    JournalShipper(memory.store, settings).ship()
    memory.add("after restart", user_id="alice", infer=False)
    assert JournalShipper(memory.store, settings).ship() == 1  # a new process continues
    report = verify_backups(open_destinations(settings), None)
    assert report.journal == [] or report.ok
    from memvault.backup.journal import follow_chain, list_segments

    lineage = memory.store.meta().lineage_id
    dest = open_destinations(settings)[0]
    chain = follow_chain(dest, lineage, 0, None)
    assert not chain.faults and chain.upto_seq == memory.store.last_seq()
    assert len(list_segments(dest, lineage)) == 2


def test_full_staging_disk_fails_every_destination_clearly(memory: Memory, settings: Settings,
                                                           tiny_disk: Path, tmp_path: Path
                                                           ) -> None:
    add_texts(memory, 80)
    staged_on_tiny = settings.model_copy(update={"data_dir": tiny_disk,
                                                 "backup_urls": [str(tmp_path / "b")]})
    result = only(create_backup(memory.store, staged_on_tiny))
    assert result.status == "failed"
    assert "cannot stage the snapshot" in result.reasons[0]
    assert "No space left on device" in result.reasons[0]
    assert list_backups(LocalDestination(tmp_path / "b")) == []
    assert not list((tiny_disk / "tmp").iterdir())  # the staging folder is removed


def test_a_changed_digit_that_parses_to_the_same_float_is_still_damage(
        memory: Memory, settings: Settings) -> None:
    """The 17th digit of a probe vector can change without changing the float it parses to:
    the manifest must still be found damaged (its bytes are checked, not only its values)."""
    add_texts(memory, 3)
    result = only(create_backup(memory.store, settings))
    path = backup_dir(settings, result.id) / "manifest.json"
    raw = path.read_bytes()
    values = json.loads(raw)

    def same_values_other_bytes() -> bytes | None:
        for match in re.finditer(rb"\d\.\d{15,}(\d)[,\n]", raw):
            digit = match.start(1)
            for candidate in b"0123456789":
                changed = raw[:digit] + bytes([candidate]) + raw[digit + 1:]
                if changed != raw and json.loads(changed) == values:
                    return changed
        return None

    changed = same_values_other_bytes()
    assert changed is not None  # probe vectors hold hundreds of 17-digit floats
    path.write_bytes(changed)
    report = verify_backups(open_destinations(settings), None, every=True)
    assert any(f.file == "manifest.json" and f.backup == result.id for f in report.faults)


def test_verify_all_tells_retention_from_damage(memory: Memory, settings: Settings) -> None:
    """An old monthly backup whose journal retention deleted restores to its own seq only:
    `verify --all` says so instead of calling it damaged; a range deleted by anything else is
    still a fault."""
    add_texts(memory, 3, "alice", "old")
    last_month = datetime.now(UTC) - timedelta(days=40)
    old = only(create_backup(memory.store, settings, clock=lambda: last_month))
    add_texts(memory, 3, "alice", "new")
    newest = only(create_backup(memory.store, settings))
    assert old.status == newest.status == VALID
    dest = open_destinations(settings)[0]
    plan = plan_prune(dest, {"last": 1, "monthly": 2})
    assert old.id in plan.keep and plan.segments  # kept by "monthly", its journal pruned
    apply_prune(plan)
    report = verify_backups([dest], None, every=True)
    assert report.ok, [str(f) for f in report.faults]
    assert report.journal[0]["point_in_time_only"] == [old.id]
    # Without retention's record the same missing range is a gap, as any deletion is.
    (Path(settings.backup_urls[0]) / "lineages" / memory.store.meta().lineage_id
     / "retention.json").unlink()
    report = verify_backups([dest], None, every=True)
    assert any("journal gap" in f.fault for f in report.faults), report.faults
