"""`memvault doctor`: the safety net checked end to end, with Nagios exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memvault.backup.snapshot import create_backup
from memvault.cli import app
from memvault.config import Settings
from memvault.guard.drill import run_drill
from memvault.memory import Memory
from tests.peers.http_peer import HTTPPeer


def doctor(monkeypatch: pytest.MonkeyPatch, settings: Settings, **env: str) -> tuple[int, dict]:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", str(settings.database_url))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["doctor", "--json"])
    return result.exit_code, json.loads(result.stdout)


def states(report: dict) -> dict[str, str]:
    return {c["name"].split(" ")[0]: c["status"] for c in report["checks"]
            if c["status"] != "OK"}


def test_doctor_is_critical_without_a_backup_and_ok_with_one(
    settings: Settings, memory: Memory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory.add("worth a backup", user_id="alice", infer=False)
    code, report = doctor(monkeypatch, settings)
    assert code == 2 and report["status"] == "CRITICAL"
    assert states(report) == {"backups": "CRITICAL", "alerts": "WARNING", "drill": "WARNING"}
    backups = next(c for c in report["checks"] if c["name"].startswith("backups"))
    assert "memvault backup create" in backups["hint"]

    assert all(r.status == "valid" for r in create_backup(memory.store, settings))
    assert run_drill(settings).ok  # the backup was restored once: no drill warning
    with HTTPPeer({("POST", "/hook"): lambda body, headers: (200, {})}) as hook:
        code, report = doctor(monkeypatch, settings,
                              MEMVAULT_ALERT_URLS=f"json://127.0.0.1:{hook.port}/hook")
    assert code == 0, report["checks"]
    assert report["status"] == "OK"
    assert any(c["name"] == "disk" for c in report["checks"])


def test_doctor_names_an_unreachable_backup_destination(
    settings: Settings, memory: Memory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    blocker = tmp_path / "nas-not-mounted"
    blocker.write_text("a file where the backup directory should be")
    code, report = doctor(monkeypatch, settings, MEMVAULT_BACKUP_URLS=str(blocker / "backups"))
    assert code == 2
    failing = [c for c in report["checks"] if c["name"].startswith("backups")]
    assert failing and failing[0]["status"] == "CRITICAL"
    assert str(blocker) in failing[0]["name"] + failing[0]["message"]


def test_one_disk_row_per_filesystem_with_whole_paths(
    memory: Memory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    data = tmp_path / "a-rather-long-folder-name-for-the-data" / "memvault-data-directory"
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(data))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", str(memory.settings.database_url))
    result = CliRunner().invoke(app, ["doctor", "--json"])
    disks = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "disk"]
    # the default backup folder sits inside the data dir, on the same disk: one row, both named
    assert len(disks) == 1, disks
    assert str(data) in disks[0]["message"] and str(data / "backups") in disks[0]["message"]
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal folds a path, never cuts it
    table = CliRunner().invoke(app, ["doctor"]).stdout
    assert "…" not in table
    folded = "".join(line.split("│")[3].strip() for line in table.splitlines()
                     if line.startswith("│ disk") or line.startswith("│    "))
    assert "memvault-data-directory/backups" in folded.replace(" ", "")
