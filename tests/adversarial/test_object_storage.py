"""An object store that fails the way real ones do, through a fault-injecting proxy in front of
the S3 test server: deletes refused key by key, replies lost after the write, listings that
answer nothing. Nothing may claim "deleted", "valid" or "empty" that is not."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from typer.testing import CliRunner

from memvault.backup import (
    VALID,
    JournalShipper,
    apply_prune,
    create_backup,
    list_backups,
    plan_prune,
    run_restore,
)
from memvault.backup.catalog import DAMAGED, newest_valid
from memvault.backup.destinations import DeletesRefused, open_destination
from memvault.backup.head import read_head, read_marker, write_head
from memvault.backup.journal import list_segments
from memvault.backup.presence import ListingUnreliable, list_lineages
from memvault.backup.verify import verify_backups
from memvault.cli import app
from memvault.config import Settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.store import open_store
from tests.peers.s3_faults import Action, Fault, RequestKind, S3FaultProxy
from tests.peers.s3_server import S3Server

# Where the store plays no part (what the object store answers), one backend is enough.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3_server.url) as faults:
        yield faults


@pytest.fixture
def s3_only(settings: Settings, s3_server: S3Server, proxy: S3FaultProxy) -> Settings:
    """One S3 destination, reached through the fault proxy."""
    bucket = "mv-" + uuid.uuid4().hex[:10]
    s3_server.create_bucket(bucket)
    return settings.model_copy(update={
        "backup_urls": [f"s3://{bucket}/p"], "s3_endpoint_url": proxy.url,
        "s3_access_key_id": "memvault-test", "s3_retries": 2,
        "s3_secret_access_key": SecretStr("memvault-test-secret")})


def _add(memory: Memory, n: int, tag: str) -> None:
    memory.add([{"role": "user", "content": f"{tag} fact {i}"} for i in range(n)],
               user_id="alice", infer=False)


def _snapshots(memory: Memory, settings: Settings, count: int) -> list[str]:
    ids = []
    for index in range(count):
        _add(memory, 2, f"round {index}")
        (result,) = create_backup(memory.store, settings)
        assert result.status == VALID, result.reasons
        ids.append(result.id)
    return ids


# ---------------------------------------------------------------- DeleteObjects per-key errors


@SQLITE_ONLY
def test_prune_names_every_key_a_delete_refuses(memory: Memory, s3_only: Settings,
                                                proxy: S3FaultProxy, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _snapshots(memory, s3_only, 3)
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    proxy.add(Fault(RequestKind.DELETE_OBJECTS, ".", Action.DENY_DELETE))
    before = REGISTRY.get_sample_value("memvault_backup_objects_not_deleted_total",
                                       {"destination": dest.url}) or 0
    plan = plan_prune(dest, {"last": 1})
    assert set(plan.delete) == set(ids[:2])
    with pytest.raises(DeletesRefused) as refused:
        apply_prune(plan)
    # Manifests go first; a refused manifest keeps its data files (never a manifest alone).
    manifests = {f"{e.folder}manifest.json" for e in list_backups(dest)[:2]}
    assert manifests <= set(refused.value.not_deleted) <= manifests | set(plan.segments)
    assert plan.deleted_ids() == []
    assert [e.id for e in list_backups(dest) if e.valid] == ids  # everything is still there
    after = REGISTRY.get_sample_value("memvault_backup_objects_not_deleted_total",
                                      {"destination": dest.url})
    assert after == before + len(refused.value.not_deleted)

    # The CLI says so: exit 1, each key named, nothing called "deleted".
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(s3_only.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", s3_only.database_url)
    monkeypatch.setenv("MEMVAULT_BACKUP_URLS", s3_only.backup_urls[0])
    monkeypatch.setenv("MEMVAULT_BACKUP_KEEP", "last=1")
    monkeypatch.setenv("MEMVAULT_S3_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("MEMVAULT_S3_ACCESS_KEY_ID", "memvault-test")
    monkeypatch.setenv("MEMVAULT_S3_SECRET_ACCESS_KEY", "memvault-test-secret")
    out = CliRunner().invoke(app, ["backup", "prune"])
    text = " ".join(out.output.split())
    assert out.exit_code == 1, out.output
    assert "NOT deleted" in text and "AccessDenied" in text
    assert " deleted " not in text.replace("NOT deleted", "")
    assert [e.id for e in list_backups(dest) if e.valid] == ids


# ---------------------------------------------------------------- replies lost after the write


@SQLITE_ONLY
@pytest.mark.parametrize("action", [Action.LOSE_REPLY, Action.DROP_CONNECTION])
def test_a_lost_reply_is_checked_before_it_counts_as_failed(
        memory: Memory, s3_only: Settings, proxy: S3FaultProxy, action: Action) -> None:
    _add(memory, 5, "lost reply")
    # Every attempt of the data file and of the manifest is stored, and its reply lost.
    for pattern in (r"memories\.jsonl\.zst$", r"manifest\.json$"):
        proxy.add(Fault(RequestKind.PUT, pattern, action))
    (result,) = create_backup(memory.store, s3_only)
    assert result.status == VALID, result.reasons
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    (entry,) = list_backups(dest)
    assert entry.valid and entry.id == result.id
    assert verify_backups([dest], None, read_data=True).ok


def test_a_failed_run_leaves_no_manifest_and_prune_keeps_the_real_backups(
        memory: Memory, s3_only: Settings, proxy: S3FaultProxy) -> None:
    ids = _snapshots(memory, s3_only, 2)
    _add(memory, 3, "third")
    # The manifest is stored but its reply is lost, and the re-check cannot tell: the run
    # fails. Its manifest must go with its data (first), or it would read as the newest backup.
    proxy.add(Fault(RequestKind.PUT, r"manifest\.json$", Action.LOSE_REPLY))
    # (the first HEAD is the no-overwrite check before the upload)
    proxy.add(Fault(RequestKind.HEAD, r"manifest\.json$", Action.UNAVAILABLE, skip=1))
    (failed,) = create_backup(memory.store, s3_only)
    assert failed.status == "failed"
    proxy.clear()
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    entries = list_backups(dest)
    assert [e.id for e in entries] == ids  # nothing of the failed run is left
    plan = plan_prune(dest, {"last": 1})
    assert list(plan.keep) == [ids[1]]


def test_a_manifest_whose_data_is_gone_is_never_valid(memory: Memory, s3_only: Settings,
                                                      s3_server: S3Server) -> None:
    ids = _snapshots(memory, s3_only, 2)
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    newest = list_backups(dest)[-1]
    # What a run that lost track of its files leaves: the manifest alone.
    dest.delete([k for k in newest.keys if not k.endswith("manifest.json")])
    entries = list_backups(dest)
    assert [(e.id, e.status) for e in entries] == [(ids[0], VALID), (ids[1], DAMAGED)]
    assert "memories.jsonl.zst is missing" in (entries[1].problem or "")
    found = newest_valid(entries)
    assert found is not None and found.id == ids[0]
    plan = plan_prune(dest, {"last": 1})
    assert ids[0] in plan.keep and ids[0] not in plan.delete


# ---------------------------------------------------------------- listings that answer nothing


def test_an_empty_listing_is_not_an_empty_history(memory: Memory, s3_only: Settings,
                                                  proxy: S3FaultProxy) -> None:
    _add(memory, 20, "held")
    (first,) = create_backup(memory.store, s3_only)
    assert first.status == VALID
    ids = [r["id"] for r in memory.get_all(user_id="alice", top_k=100)["results"]]
    for memory_id in ids[:13]:
        memory.delete(memory_id)
    proxy.add(Fault(RequestKind.LIST, ".", Action.EMPTY_LIST))
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    with pytest.raises(ListingUnreliable, match="listing unreliable"):
        list_lineages(dest)
    assert list_lineages(dest, strict=False).unseen == [memory.store.meta().lineage_id]
    # 20 -> 7 with no history in sight: the lineage head (GET) is the history.
    (dropped,) = create_backup(memory.store, s3_only)
    assert dropped.status == "suspicious", dropped.reasons
    assert "fewer than 50%" in dropped.reasons[0] and "(20)" in dropped.reasons[0]
    proxy.clear()
    assert list_lineages(dest).reliable


def test_a_failed_journal_put_under_an_empty_listing_continues_the_chain(
        memory: Memory, s3_only: Settings, proxy: S3FaultProxy) -> None:
    _add(memory, 5, "base")
    (base,) = create_backup(memory.store, s3_only)
    assert base.status == VALID
    shipper = JournalShipper(memory.store, s3_only)
    _add(memory, 1, "one")
    assert shipper.ship() == 1
    proxy.add(Fault(RequestKind.LIST, ".", Action.EMPTY_LIST))
    failing = proxy.add(Fault(RequestKind.PUT, r"/journal/", Action.UNAVAILABLE))
    _add(memory, 1, "two")
    assert shipper.ship() == 0 and shipper.last_error  # one failed PUT (every attempt)
    proxy.remove(failing)
    _add(memory, 1, "three")
    assert shipper.ship() == 1 and not shipper.last_error  # from the head's tip, not seq 0
    proxy.clear()
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    lineage = memory.store.meta().lineage_id
    refs = list_segments(dest, lineage)
    assert [r.after_seq for r in refs] == [base.manifest.seq if base.manifest else -1,
                                           refs[0].upto_seq]
    assert refs[-1].upto_seq == memory.store.last_seq()
    report = verify_backups([dest], None, every=True, read_data=True)
    assert report.ok, report.faults


def test_shipping_refuses_a_new_chain_over_one_the_head_names(
        memory: Memory, s3_only: Settings, proxy: S3FaultProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    _add(memory, 3, "base")
    shipper = JournalShipper(memory.store, s3_only)
    assert shipper.ship() == 1
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    lineage = memory.store.meta().lineage_id
    head = read_head(dest, lineage)
    assert head is not None and head.journal_upto == memory.store.last_seq()
    assert head.journal_tip_sha256 and head.beat == 1 and head.process == shipper.process
    assert read_marker(dest) == [lineage]
    # A head that names shipped seqs but no tip checksum (written by something else), while
    # the listing shows nothing: no new chain from seq 0, a refusal that shows as lag.
    write_head(dest, replace(head, journal_tip_sha256=None, beat=head.beat + 1))
    proxy.add(Fault(RequestKind.LIST, ".", Action.EMPTY_LIST))
    _add(memory, 1, "more")
    fresh = JournalShipper(memory.store, s3_only)
    assert fresh.ship() == 0
    assert fresh.last_error and "refusing to start a new chain" in fresh.last_error
    proxy.clear()
    assert [r.after_seq for r in list_segments(dest, lineage)] == [0]
    shipper.stop()
    stopped = read_head(dest, lineage)
    assert stopped is not None and stopped.stopped and stopped.beat > head.beat


# ---------------------------------------------------------------- gaps and storms


def test_two_snapshots_within_one_journal_interval_leave_no_gap(
        memory: Memory, s3_only: Settings, tmp_path: Path,
        local_embedder: LocalEmbedder) -> None:
    _add(memory, 3, "older")
    (older,) = create_backup(memory.store, s3_only)
    _add(memory, 3, "between")  # no shipping cycle runs before the next snapshot
    (newer,) = create_backup(memory.store, s3_only)
    assert (older.status, newer.status) == (VALID, VALID)
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    lineage = memory.store.meta().lineage_id
    assert [(r.after_seq, r.upto_seq) for r in list_segments(dest, lineage)] == [
        (older.manifest.seq if older.manifest else -1, newer.manifest.seq if newer.manifest
         else -1)]
    # The newer snapshot is damaged: the older one plus the journal still gives everything.
    entry = next(e for e in list_backups(dest) if e.id == newer.id)
    dest.delete([k for k in entry.keys if k.endswith("memories.jsonl.zst")])
    target = open_store(s3_only.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'target.db'}"}))
    try:
        report = run_restore(target, s3_only, local_embedder)
        assert report.plan.manifest.id == older.id
        assert target.counts() == memory.store.counts() == {"user:alice": 6}
    finally:
        target.close()


@SQLITE_ONLY
def test_a_503_storm_marks_nothing_valid_and_the_journal_completes_after(
        memory: Memory, s3_only: Settings, proxy: S3FaultProxy) -> None:
    _add(memory, 4, "storm")
    storm = [proxy.add(Fault(kind, ".", Action.UNAVAILABLE)) for kind in RequestKind]
    (result,) = create_backup(memory.store, s3_only)
    assert result.status == "failed" and "SlowDown" in result.reasons[0]
    shipper = JournalShipper(memory.store, s3_only)
    assert shipper.ship() == 0 and shipper.last_error
    for fault in storm:
        proxy.remove(fault)
    dest = open_destination(s3_only.backup_urls[0], s3_only)
    assert [e for e in list_backups(dest) if e.valid] == []
    assert shipper.ship() == 1 and not shipper.last_error
    (after,) = create_backup(memory.store, s3_only)
    assert after.status == VALID
    report = verify_backups([dest], None, every=True, read_data=True)
    assert report.ok, report.faults
