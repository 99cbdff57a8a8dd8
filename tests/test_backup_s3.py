"""Backups to S3-compatible object storage, against a real S3-protocol server on 127.0.0.1."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from memvault.backup import (
    VALID,
    DestinationError,
    JournalShipper,
    create_backup,
    list_backups,
    open_destinations,
    run_restore,
    verify_backups,
)
from memvault.backup.crypto import Cipher
from memvault.config import Settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.store import open_store
from tests.peers.s3_server import S3Server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_settings(settings: Settings, s3_server: S3Server) -> Settings:
    bucket = "mv-" + uuid.uuid4().hex[:10]
    s3_server.create_bucket(bucket)
    return settings.model_copy(update={
        "backup_urls": [f"s3://{bucket}/nightly", str(settings.data_dir / "backups")],
        "s3_endpoint_url": s3_server.url, "s3_access_key_id": "memvault-test",
        "s3_secret_access_key": SecretStr("memvault-test-secret"),
        "backup_encryption_key": SecretStr("a long random secret for tests"),
    })


def test_s3_backup_verify_journal_and_restore(memory: Memory, s3_settings: Settings,
                                              tmp_path: Path,
                                              local_embedder: LocalEmbedder) -> None:
    memory.add([{"role": "user", "content": f"s3 fact {i}"} for i in range(9)],
               user_id="alice", infer=False)
    results = create_backup(memory.store, s3_settings)
    assert [r.status for r in results] == [VALID, VALID], [r.reasons for r in results]
    assert results[0].destination.startswith("s3://")
    s3_dest = open_destinations(s3_settings)[0]
    (entry,) = list_backups(s3_dest)
    assert entry.valid and entry.manifest and entry.manifest.encrypted
    stored = s3_dest.read_bytes(f"{entry.folder}memories.jsonl.zst")
    assert b"s3 fact" not in stored  # encrypted at rest
    memory.add("written after the snapshot", user_id="alice", infer=False)
    assert JournalShipper(memory.store, s3_settings).ship() == 2  # one segment per destination
    cipher = Cipher("a long random secret for tests")
    report = verify_backups([s3_dest], cipher, read_data=True)
    assert report.ok, report.faults
    assert report.journal[0]["upto_seq"] == memory.store.last_seq()
    # Restore from the object store alone into a fresh store.
    only_s3 = s3_settings.model_copy(update={
        "backup_urls": s3_settings.backup_urls[:1],
        "database_url": f"sqlite:///{tmp_path / 'restored.db'}"})
    target = open_store(only_s3)
    try:
        restored = run_restore(target, only_s3, local_embedder)
        assert restored.counts == {"user:alice": 10} and restored.replayed == 1
    finally:
        target.close()


def test_s3_objects_are_never_overwritten(s3_settings: Settings) -> None:
    dest = open_destinations(s3_settings)[0]
    dest.put_bytes("snapshots/x/manifest.json", b"{}")
    with pytest.raises(DestinationError, match="refusing to overwrite"):
        dest.put_bytes("snapshots/x/manifest.json", b"{}")
    assert dest.read_bytes("snapshots/x/manifest.json") == b"{}"


def test_s3_down_is_retried_surfaced_and_nothing_valid(memory: Memory, settings: Settings,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    memory.add("kept locally while S3 is down", user_id="alice", infer=False)
    with S3Server() as outage:
        outage.create_bucket("down-bucket")
        down = settings.model_copy(update={
            "backup_urls": ["s3://down-bucket/p", str(settings.data_dir / "backups")],
            **outage.settings_overrides(),
            "s3_secret_access_key": SecretStr("memvault-test-secret")})
    # The server is stopped now: every request is refused.
    before = REGISTRY.get_sample_value("memvault_backup_runs_total", {"result": "failed"}) or 0
    with caplog.at_level(logging.WARNING, logger="memvault.backup"):
        s3_result, local_result = create_backup(memory.store, down)
    assert local_result.status == VALID  # one bad destination does not stop the others
    assert s3_result.status == "failed"
    assert "after 3 attempts" in s3_result.reasons[0] and outage.url in s3_result.reasons[0]
    attempts = [r.message for r in caplog.records if "attempt" in r.message]
    assert any("attempt 1/3" in m for m in attempts) and any("attempt 3/3" in m
                                                             for m in attempts)
    after = REGISTRY.get_sample_value("memvault_backup_runs_total", {"result": "failed"})
    assert after == before + 1
    shipper = JournalShipper(memory.store, down)
    shipper.ship()
    assert shipper.last_error and "s3://down-bucket/p" in shipper.last_error
    with pytest.raises(DestinationError, match="after 3 attempts"):
        list_backups(open_destinations(down)[0])
