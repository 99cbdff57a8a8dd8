"""The one settings object.

Precedence: flags > MEMVAULT_* environment > memvault.toml > defaults.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from memvault.config.durations import (
    DURATION_FORMS,
    KEEP_FORMS,
    format_duration,
    parse_duration,
    parse_keep,
)
from memvault.config.redact import dsn_secrets, environment_secrets, redact_url
from memvault.errors import ConfigError

ENV_PREFIX = "MEMVAULT_"
CONFIG_FILE_ENV = "MEMVAULT_CONFIG"
DEFAULT_CONFIG_FILE = "memvault.toml"

Duration = Annotated[float, Field(description=DURATION_FORMS)]


def default_data_dir() -> Path:
    # Never /tmp: a data dir that vanishes on reboot is how memories get lost quietly.
    return Path(platformdirs.user_data_dir("memvault", appauthor=False))


def config_file_path() -> Path:
    return Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))


class Settings(BaseSettings):
    """Effective configuration. Field names are the environment keys without the prefix."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    embedder: str = "local"
    embedder_url: str | None = None
    embedder_api_key: SecretStr | None = None
    embedder_timeout: Duration = 30.0
    embedder_batch_size: int = Field(64, ge=1, le=4096)
    llm: str | None = None
    llm_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout: Duration = 60.0
    # infer=True's prompts (mem0's custom_instructions, custom_fact_extraction_prompt and
    # custom_update_memory_prompt): added to, resp. replacing, memvault's own instructions
    llm_instructions: str | None = None
    llm_extraction_prompt: str | None = None
    llm_update_prompt: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8888, ge=1, le=65535)
    admin_api_key: SecretStr | None = None
    backup_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    backup_interval: Duration = 86400.0
    journal_interval: Duration = 10.0
    backup_keep: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: parse_keep("last=7,daily=7,weekly=4,monthly=6")
    )
    backup_encryption_key: SecretStr | None = None
    auto_restore: Literal["empty", "never"] = "empty"
    alert_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    alert_drop_ratio: float = Field(0.5, gt=0, lt=1)
    drill_interval: Duration = 604800.0
    db_timeout: Duration = 5.0
    # how search ranks: vector and keyword fused (hybrid), or one of them alone
    search: Literal["hybrid", "vector", "keyword"] = "hybrid"
    # 200: recall@10 ~0.98 on real text at ~2.7 ms (100 gave 0.95-0.96, too close to the bar)
    pg_ef_search: int = Field(200, ge=1, le=1000)
    # SQLite: an embedder with at least this many vectors is searched through a persisted
    # approximate (HNSW) index next to the database; smaller ones keep exact search in memory.
    ann_threshold: int = Field(200_000, ge=1)
    # -- backups to S3-compatible object storage; used by s3:// MEMVAULT_BACKUP_URLS
    s3_endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 (MinIO); None = AWS
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_retries: int = Field(3, ge=1, le=20)

    @field_validator(
        "embedder_timeout",
        "llm_timeout",
        "backup_interval",
        "journal_interval",
        "drill_interval",
        "db_timeout",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("backup_keep", mode="before")
    @classmethod
    def _keep(cls, value: Any) -> dict[str, int]:
        return parse_keep(value)

    @field_validator("backup_urls", "alert_urls", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("embedder", "llm")
    @classmethod
    def _provider_spec(cls, value: str | None) -> str | None:
        if value is None or value == "local":
            return value
        if not re.match(r"^(openai|ollama):\S+$", value):
            raise ValueError(
                f"expected 'local', 'openai:<model>' or 'ollama:<model>', got {value!r}"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^(sqlite:///|postgres(ql)?://)", value):
            raise ValueError(
                "expected sqlite:///<path> or postgresql://user:password@host:port/dbname, "
                f"got {redact_url(value)!r}"
            )
        return value

    @model_validator(mode="after")
    def _derived_defaults(self) -> Settings:
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'memvault.db'}"
        if not self.backup_urls:
            self.backup_urls = [str(self.data_dir / "backups")]
        return self

    @property
    def sqlite_path(self) -> Path | None:
        assert self.database_url is not None
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file_path()),
        )


SECRET_KEYS = {"embedder_api_key", "llm_api_key", "admin_api_key", "backup_encryption_key",
               "s3_secret_access_key"}


def secret_values(settings: Settings) -> list[str]:
    """Literal secrets that must never be shown: configured keys, the database password in
    whatever spelling the URL gives it, and the driver's environment secrets (PGPASSWORD)."""
    values = [secret.get_secret_value() for secret in (
        settings.admin_api_key, settings.embedder_api_key, settings.llm_api_key,
        settings.backup_encryption_key, settings.s3_secret_access_key, *settings.alert_urls,
    ) if secret is not None]
    return values + dsn_secrets(settings.database_url or "") + environment_secrets()


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings; a bad value raises ConfigError naming the key and the accepted forms."""
    init = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = config_file_path()
    if CONFIG_FILE_ENV in os.environ and not path.is_file():
        raise ConfigError(
            f"{CONFIG_FILE_ENV} points to {path}, which is not a file",
            hint="create it or unset the variable",
        )
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc), hint=_hint()) from None
    except ValueError as exc:  # malformed memvault.toml
        raise ConfigError(f"cannot read {path}: {exc}", hint="fix the TOML syntax") from None


def _hint() -> str:
    return "fix the value in the flag, the MEMVAULT_* variable or memvault.toml named above"


def _describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "settings"
        env = ENV_PREFIX + key.upper()
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"{key} ({env}): {message}")
    return "invalid configuration: " + "; ".join(lines)


def describe_settings(
    settings: Settings, overrides: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every effective value with where it came from, secrets redacted."""
    init = InitSettingsSource(Settings, init_kwargs=dict(overrides or {}))()
    env = EnvSettingsSource(Settings)()
    toml = TomlConfigSettingsSource(Settings, toml_file=config_file_path())()
    rows = []
    for name in Settings.model_fields:
        if name in init and init[name] is not None:
            source = "flag"
        elif name in env:
            source = f"env {ENV_PREFIX}{name.upper()}"
        elif name in toml:
            source = f"file {config_file_path()}"
        else:
            source = "default"
        rows.append({"key": name, "value": display_value(name, getattr(settings, name)),
                     "source": source})
    return rows


def display_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, SecretStr) or name in SECRET_KEYS:
        return "***"
    if name == "alert_urls":
        return [_redact_apprise(v.get_secret_value()) for v in value]
    if name in ("database_url", "embedder_url", "llm_url", "s3_endpoint_url"):
        # credentials may be in URLs, as userinfo or as ?password= / keyword values
        return redact_url(value)
    if name == "backup_urls":
        return [redact_url(v) for v in value]
    if name in {"embedder_timeout", "llm_timeout", "backup_interval", "journal_interval",
                "drill_interval", "db_timeout"}:
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _redact_apprise(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://***" if sep else "***"


def public_settings(settings: Settings) -> dict[str, Any]:
    """The redacted configuration as one dict (for /configure and logs)."""
    return {name: display_value(name, getattr(settings, name)) for name in Settings.model_fields}


__all__ = [
    "KEEP_FORMS",
    "Settings",
    "describe_settings",
    "load_settings",
    "public_settings",
    "redact_url",
    "secret_values",
]
