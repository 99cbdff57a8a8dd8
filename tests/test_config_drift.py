"""Configuration drift: serve's guard records its configuration fingerprint (secrets hashed)
in the ledger; a start with another database, embedder or address says what changed (log,
/status, `memvault_config_drift_total`), and the StoreEmpty alert of the incident names the
old and new database (never the password)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from memvault.backup.destinations import LocalDestination
from memvault.config import Settings, load_settings
from memvault.config.fingerprint import fingerprint, secret_hash
from memvault.guard.ledger import read_ledger
from memvault.guard.status import memory_status
from memvault.guard.watchdog import Guard
from memvault.memory import Memory
from tests.test_guard import other_database, running

PASSWORD = "Drift-s3cret-pw"


def with_password(url: str) -> str:
    """The same database, its URL carrying a password (the test server trusts local users)."""
    return url.replace(":@", f":{PASSWORD}@", 1) if url.startswith("postgres") else url


def drift_count(guard: Guard, what: str) -> float | None:
    return guard.registry.get_sample_value("memvault_config_drift_total", {"what": what})


def test_the_fingerprint_is_recorded_with_secrets_hashed(
        settings: Settings, memory: Memory, tmp_path: Path) -> None:
    keyed = settings.model_copy(update={
        "database_url": with_password(str(settings.database_url)),
        "admin_api_key": load_settings({"admin_api_key": "admin-key-123456"}).admin_api_key})
    memory.add("a memory", user_id="alice", infer=False)
    with running(Guard(keyed, memory)):
        pass
    record, _ = read_ledger([LocalDestination(settings.data_dir / "backups")])
    assert record is not None and record.config is not None
    assert record.config["listen"] == "127.0.0.1:8888"
    assert record.config["secrets"]["admin_api_key"] == secret_hash("admin-key-123456")
    stored = b"".join(p.read_bytes() for p in (settings.data_dir / "backups").rglob("*.json"))
    assert b"admin-key-123456" not in stored and PASSWORD.encode() not in stored


def test_a_new_address_and_embedder_are_logged_counted_and_shown(
        settings: Settings, memory: Memory, caplog: pytest.LogCaptureFixture) -> None:
    memory.add("a memory", user_id="alice", infer=False)
    with running(Guard(settings, memory)) as first:
        assert drift_count(first, "listen") is None  # the first start: nothing to compare
    moved = settings.model_copy(update={"port": 8889, "host": "0.0.0.0"})
    with caplog.at_level(logging.WARNING, "memvault.guard"), \
            running(Guard(moved, memory)) as second:
        assert drift_count(second, "listen") == 1.0
        assert drift_count(second, "database") is None
        changes = second.status()["config_drift"]["changes"]
        assert changes == {"listen": {"recorded": "127.0.0.1:8888", "now": "0.0.0.0:8889"}}
        checks: list[dict[str, Any]] = []
        report = memory_status(memory, checks, second)
        assert report["guard"]["config_drift"]["changes"] == changes
        assert any(c["name"] == "config" and "0.0.0.0:8889" in c["message"] for c in checks)
        assert json.dumps(second.status())
    assert "listen 127.0.0.1:8888 -> 0.0.0.0:8889" in caplog.text
    with running(Guard(moved, memory)) as third:  # the second start recorded its own
        assert drift_count(third, "listen") is None


def test_store_empty_alert_names_the_old_and_new_database_never_the_password(
        backend: str, settings: Settings, memory: Memory, local_embedder: Any,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    old = settings.model_copy(update={"database_url": with_password(str(settings.database_url)),
                                      "auto_restore": "never"})
    memory.add("the guarded store's memory", user_id="alice", infer=False)
    with running(Guard(old, memory)):
        pass
    new_url = with_password(other_database(backend, tmp_path, request))
    new = old.model_copy(update={"database_url": new_url})
    with Memory(new, embedder=local_embedder) as fresh, running(Guard(new, fresh)) as guard:
        empty = next(f for f in guard.verdict.firing() if f.alert == "StoreEmpty")
        was = fingerprint(old).database
        now = fingerprint(new).database
        assert was != now
        assert f"database {was} -> {now}" in empty.summary
        assert empty.details["config_changes"]["database"] == {"recorded": was, "now": now}
        assert drift_count(guard, "database") == 1.0
        sent = json.dumps(guard.alerts.status())  # what the notification said
        assert f"{was} -> {now}" in sent
        assert PASSWORD not in sent + empty.summary
