"""The candidate configuration: the current one with a dotenv (as compose reads it), a
memvault.toml and flags laid over it, in that order of precedence (flags win). Every setting
the candidate changes is listed with where each side's value comes from, secrets redacted (a
changed secret shows as changed, never its value)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memvault.config import Settings, describe_settings, load_settings
from memvault.config.fingerprint import secret_hash
from memvault.config.settings import ENV_PREFIX, SECRET_KEYS, display_value
from memvault.errors import ConfigError


@dataclass
class Candidate:
    settings: Settings
    sources: dict[str, str]  # setting -> where the candidate's own value comes from
    ignored: list[str] = field(default_factory=list)  # dotenv keys that are not settings


@dataclass(frozen=True)
class Difference:
    key: str
    current: Any
    candidate: Any
    current_source: str
    candidate_source: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "current": self.current, "candidate": self.candidate,
                "current_source": self.current_source,
                "candidate_source": self.candidate_source}


def read_dotenv(path: Path) -> dict[str, str | None]:
    from dotenv import dotenv_values

    if not path.is_file():
        raise ConfigError(f"--env {path} is not a file", hint="give the compose .env file")
    return dict(dotenv_values(path))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"--config {path} cannot be read: {exc.strerror or exc}",
                          hint="give the candidate memvault.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}",
                          hint="fix the TOML syntax") from None


def load_candidate(current_flags: dict[str, Any], *, env_file: Path | None = None,
                   config_file: Path | None = None, flags: dict[str, Any] | None = None
                   ) -> Candidate:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    ignored: list[str] = []
    if config_file is not None:
        for key, value in read_toml(config_file).items():
            values[key.lower()] = value
            sources[key.lower()] = f"candidate file {config_file}"
    if env_file is not None:
        for key, value in read_dotenv(env_file).items():
            name = key.upper().removeprefix(ENV_PREFIX).lower()
            if not key.upper().startswith(ENV_PREFIX) or name not in Settings.model_fields:
                ignored.append(key)
            elif value is not None:
                values[name] = value
                sources[name] = f"candidate env {env_file} ({key})"
    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = value
            sources[key] = "candidate flag"
    settings = load_settings({**current_flags, **values})
    return Candidate(settings, sources, ignored)


def differences(current: Settings, current_flags: dict[str, Any], candidate: Candidate
                ) -> list[Difference]:
    """Every setting whose effective value differs, redacted, with both sources."""
    rows = {row["key"]: row for row in describe_settings(current, current_flags)}
    out = []
    for key in Settings.model_fields:
        before, after = getattr(current, key), getattr(candidate.settings, key)
        if key in SECRET_KEYS:
            changed = _secret(before) != _secret(after)
        else:
            changed = display_value(key, before) != display_value(key, after) or \
                _plain(before) != _plain(after)
        if changed:
            out.append(Difference(key, display_value(key, before), display_value(key, after),
                                  rows[key]["source"],
                                  candidate.sources.get(key, rows[key]["source"])))
    return out


def _secret(value: Any) -> str | None:
    return secret_hash(value.get_secret_value()) if value is not None else None


def _plain(value: Any) -> Any:
    """A comparable form (URLs may differ only in their hidden password)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "get_secret_value"):
        return secret_hash(value.get_secret_value())
    if isinstance(value, str):
        return secret_hash(value)
    return value
