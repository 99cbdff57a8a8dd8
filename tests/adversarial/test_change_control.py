"""Attacks on change control: secrets in a candidate in every spelling and random ones, a
misspelt setting, a file that is no database, and a safety snapshot that breaks in ways no
destination reports cleanly. Hypothesis seeds are printed for replay."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from memvault.backup.safety import Operation, SafetySnapshots
from memvault.cli import app
from memvault.config import Settings, load_settings
from memvault.config.fingerprint import fingerprint
from memvault.errors import SafetySnapshotFailed
from memvault.memory import Memory
from memvault.preflight import probe_database

SEED = int(os.environ.get("MEMVAULT_FUZZ_SEED", random.randrange(2**32)))
print(f"change control seed: MEMVAULT_FUZZ_SEED={SEED}")
PASSWORD = "Cc-Zq81xx-secret"

secrets = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                blacklist_characters="\\'\""), min_size=8, max_size=24)


@seed(SEED)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=secrets, admin=secrets)
def test_random_secrets_never_reach_a_fingerprint_or_an_unreachable_report(
        password: str, admin: str) -> None:
    shown = _report(password, admin)
    # A secret spelled like text every report holds ("postgres") proves nothing either way.
    neutral = _report(PASSWORD, PASSWORD[::-1])
    assume(not any(secret in neutral for secret in (password, quote(password, safe=""), admin)))
    for secret in {password, quote(password, safe=""), admin}:
        assert secret not in shown, f"seed {SEED}"
    assert "user=mem0_user" in shown and "port=1" in shown


def _report(password: str, admin: str) -> str:
    """What an operator sees of a configuration: its fingerprint and an unreachable probe."""
    url = f"postgresql://mem0_user:{quote(password, safe='')}@127.0.0.1:1/mem0"
    conf = load_settings({"database_url": url, "admin_api_key": admin, "db_timeout": 1})
    return json.dumps(fingerprint(conf).to_json()) + json.dumps(
        probe_database(url, 1).to_json())


def test_preflight_hides_a_password_in_every_spelling(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.adversarial.test_redaction import _parts

    host, user, database = _parts(pg_url)
    spellings = [f"postgresql:///{database}?host={host}&user={user}&password={PASSWORD}",
                 f"postgresql://{user}:{PASSWORD}@/{database}?host={host}",
                 f"postgresql:///{database}?host={host}&user={user}&sslpassword={PASSWORD}"
                 "&sslmode=disable"]
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", pg_url)
    runner = CliRunner()
    for url in spellings:
        env = tmp_path / "candidate.env"
        env.write_text(f"MEMVAULT_DATABASE_URL={url}\nPGPASSWORD={PASSWORD}\n")
        for args in (["--env", str(env)], ["--database-url", url, "--json"]):
            out = runner.invoke(app, ["preflight", *args], env={"COLUMNS": "200"})
            assert out.exit_code in (0, 1), out.stdout + out.stderr
            assert PASSWORD not in out.stdout + out.stderr, url


def test_a_misspelt_key_is_named_not_silently_dropped(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", str(settings.database_url))
    env = tmp_path / "typo.env"
    env.write_text("MEMVAULT_DATABSE_URL=sqlite:////elsewhere.db\n")
    out = CliRunner().invoke(app, ["preflight", "--env", str(env), "--json"])
    assert out.exit_code == 1, out.stdout
    assert "MEMVAULT_DATABSE_URL: not memvault settings (misspelt?)" in out.stdout


def test_a_file_that_is_no_database_is_critical_and_left_as_it_was(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    junk = tmp_path / "junk.db"
    junk.write_bytes(random.Random(SEED).randbytes(8192))
    out = CliRunner().invoke(app, ["preflight", "--database-url", f"sqlite:///{junk}",
                                   "--json"])
    assert out.exit_code == 2, out.stdout + out.stderr
    assert "cannot be read as a memvault store" in out.stdout
    assert junk.read_bytes() == random.Random(SEED).randbytes(8192)
    assert sorted(p.name for p in tmp_path.glob("junk.db*")) == ["junk.db"]  # no -wal, -shm


@pytest.mark.parametrize("fault", [OSError("No space left on device"), RuntimeError("bug"),
                                   KeyboardInterrupt])
def test_a_snapshot_that_breaks_any_way_refuses_and_deletes_nothing(
        memory: Memory, settings: Settings, fault: BaseException) -> None:
    for i in range(3):
        memory.add(f"fact {i}", user_id="alice", agent_id=f"a{i}", infer=False)

    def broken(tag: str) -> list:
        raise fault

    memory.use_safety_snapshots(SafetySnapshots(memory.store, settings, take=broken))
    expected = SafetySnapshotFailed if isinstance(fault, Exception) else KeyboardInterrupt
    with pytest.raises(expected):
        memory.reset()
    with pytest.raises(expected):
        memory.delete_all(user_id="alice")
    assert memory.store.total() == 3
    assert [e.op for e in memory.store.journal()].count("DELETE") == 0


def test_a_suspicious_or_partial_snapshot_is_no_safety_snapshot(
        memory: Memory, settings: Settings) -> None:
    from memvault.backup.snapshot import BackupResult

    memory.add("kept", user_id="alice", infer=False)
    partial = SafetySnapshots(memory.store, settings, take=lambda tag: [
        BackupResult("file:///a", "x", "valid"), BackupResult("s3://b", "x", "suspicious",
                                                              ["read-back failed"])])
    with pytest.raises(SafetySnapshotFailed, match="s3://b: suspicious"):
        partial.before(Operation.RESET)
    with pytest.raises(SafetySnapshotFailed, match="no backup destination"):
        SafetySnapshots(memory.store, settings, take=lambda tag: []).before(Operation.ADOPT)
