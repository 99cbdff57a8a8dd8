"""deploy/systemd/memvault.service, checked by systemd itself: `systemd-analyze verify`
(unknown keys and bad values are warnings on stderr with exit 0, so the test asserts silence)
and `systemd-analyze security` (the hardening's exposure score), both on an alternate root:
the unit's ExecStart must exist for verify, and this machine (or CI's container) has no
/opt/memvault. The root holds the system's own unit files (for sysinit.target & co.), the
unit, and a stand-in executable at the ExecStart path; --man=no and --generators=no keep
verify from reading man pages or running generators, neither of which a container has."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from memvault.config import Settings, load_settings
from tests.deploy_tools import DEPLOY, run

UNIT = DEPLOY / "systemd" / "memvault.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "memvault.env.example"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def unit_values() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.fixture
def root(tmp_path: Path) -> Path:
    assert SYSTEM_UNITS.is_dir(), "systemd's unit files are missing: apt-get install systemd"
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system" / UNIT.name)
    executable = tmp_path / unit_values()["ExecStart"][0].split()[0].lstrip("/")
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def test_systemd_analyze_verify_is_silent(root: Path) -> None:
    result = run(["systemd-analyze", "verify", f"--root={root}", "--man=no",
                  "--generators=no", f"/etc/systemd/system/{UNIT.name}"])
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


def test_a_typo_in_the_unit_would_be_caught(root: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    unit = root / "etc/systemd/system" / UNIT.name
    unit.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSystm="))
    result = run(["systemd-analyze", "verify", f"--root={root}", "--man=no",
                  "--generators=no", f"/etc/systemd/system/{UNIT.name}"])
    assert "ProtectSystm" in result.stderr


def test_hardening_exposure_stays_low(root: Path) -> None:
    # --threshold is the exposure times 10: 20 means "2.0 OK" at most (the unit rates ~1.3).
    result = run(["systemd-analyze", "security", "--offline=true", "--threshold=20",
                  f"--root={root}", "--no-pager", f"/etc/systemd/system/{UNIT.name}"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_unit_restarts_on_failure_and_writes_only_data_and_backups() -> None:
    values = unit_values()
    for key, expected in {"ProtectSystem": "strict", "NoNewPrivileges": "true",
                          "PrivateTmp": "true", "Restart": "on-failure",
                          "ProtectHome": "true"}.items():
        assert values[key] == [expected], key
    assert values["EnvironmentFile"] == ["/etc/memvault/memvault.env"]
    writable = {Path(p) for v in values["ReadWritePaths"] for p in v.split()}
    env = read_env_example()
    fixed = dict(v.split("=", 1) for v in values["Environment"])
    settings = load_settings({k.removeprefix("MEMVAULT_").lower(): v
                              for k, v in {**env, **fixed}.items()
                              if k.startswith("MEMVAULT_")})
    assert settings.data_dir in writable
    for url in settings.backup_urls:  # every local backup destination is writable
        assert "://" in url or Path(url) in writable, url
    cache = Path(fixed["XDG_CACHE_HOME"])  # the derived model graph is cached there
    assert any(cache.is_relative_to(w) for w in writable)


def read_env_example() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                if line.strip() and not line.startswith("#"))


def test_environment_file_example_holds_only_real_settings() -> None:
    env = read_env_example()
    assert env and all(n.startswith("MEMVAULT_") for n in env), env
    fields = {f"MEMVAULT_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = load_settings({n.removeprefix("MEMVAULT_").lower(): v for n, v in env.items()})
    assert settings.admin_api_key is not None
