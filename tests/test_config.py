from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memvault.cli import app
from memvault.config import describe_settings, load_settings, public_settings
from memvault.errors import ConfigError


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test here reads the real HOME (or its XDG folders): defaults derive from this one."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # A home that is not under /tmp (the real one may be, e.g. in a container); load_settings
    # creates nothing, so it need not exist.
    monkeypatch.setenv("HOME", "/home/memvault-test-user")
    settings = load_settings()
    assert settings.data_dir == Path("/home/memvault-test-user/.local/share/memvault")
    assert settings.embedder == "local"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8888
    assert settings.backup_interval == 24 * 3600
    assert settings.journal_interval == 10
    assert settings.backup_keep == {"last": 7, "daily": 7, "weekly": 4, "monthly": 6}
    assert settings.auto_restore == "empty"
    assert settings.alert_drop_ratio == 0.5
    assert settings.drill_interval == 7 * 86400
    assert settings.database_url == f"sqlite:///{settings.data_dir / 'memvault.db'}"
    assert settings.backup_urls == [str(settings.data_dir / "backups")]
    # Never under /tmp: a store that vanishes on reboot is a silent loss.
    assert not str(settings.data_dir).startswith("/tmp")


def test_precedence_flag_over_env_over_file_over_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "memvault.toml").write_text(
        'port = 7000\nhost = "127.0.0.2"\njournal_interval = "30s"\n'
    )
    assert load_settings().port == 7000
    assert load_settings().journal_interval == 30
    monkeypatch.setenv("MEMVAULT_PORT", "7100")
    assert load_settings().port == 7100
    assert load_settings({"port": 7200}).port == 7200
    rows = {r["key"]: r for r in describe_settings(load_settings({"port": 7200}), {"port": 7200})}
    assert rows["port"]["source"] == "flag"
    assert rows["host"]["source"].startswith("file")
    assert rows["embedder"]["source"] == "default"
    monkeypatch.delenv("MEMVAULT_PORT")
    rows = {r["key"]: r for r in describe_settings(load_settings())}
    assert rows["port"]["source"].startswith("file")


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("MEMVAULT_PORT", "eighty", "port (MEMVAULT_PORT)"),
        ("MEMVAULT_BACKUP_INTERVAL", "daily", "backup_interval (MEMVAULT_BACKUP_INTERVAL)"),
        ("MEMVAULT_BACKUP_KEEP", "last=0", "at least one backup"),
        ("MEMVAULT_BACKUP_KEEP", "forever=3", "unknown retention bucket"),
        ("MEMVAULT_EMBEDDER", "huggingface:foo", "openai:<model>"),
        ("MEMVAULT_AUTO_RESTORE", "always", "auto_restore"),
        ("MEMVAULT_ALERT_DROP_RATIO", "1.5", "alert_drop_ratio"),
        ("MEMVAULT_DATABASE_URL", "mysql://x", "sqlite:///"),
    ],
)
def test_bad_values_fail_naming_key_and_forms(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert fragment in str(caught.value)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "memvault.toml").write_text("prot = 8000\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings()


def test_malformed_toml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "memvault.toml").write_text("port = = 1\n")
    with pytest.raises(ConfigError, match=r"memvault\.toml"):
        load_settings()


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMVAULT_ADMIN_API_KEY", "sekrit-admin")
    monkeypatch.setenv("MEMVAULT_EMBEDDER_API_KEY", "sekrit-embed")
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", "postgresql://mv:sekrit-pw@db:5432/mem")
    monkeypatch.setenv("MEMVAULT_ALERT_URLS", "tgram://sekrit-bot/123,json://hook.local/x")
    settings = load_settings()
    dumped = json.dumps(public_settings(settings))
    assert "sekrit" not in dumped
    assert "postgresql://mv:***@db:5432/mem" in dumped
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert "sekrit" not in result.output
    shown = json.loads(result.output)
    assert shown["admin_api_key"] == {"value": "***", "source": "env MEMVAULT_ADMIN_API_KEY"}


def test_cli_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "from-env"))
    result = CliRunner().invoke(
        app, ["--data-dir", str(tmp_path / "from-flag"), "config", "show", "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["data_dir"] == {"value": str(tmp_path / "from-flag"), "source": "flag"}


def test_cli_reports_bad_config_with_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMVAULT_JOURNAL_INTERVAL", "-5s")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 1
    assert "journal_interval" in result.output
