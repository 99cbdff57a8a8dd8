"""The configuration's fingerprint: what makes a start a *different* server (which database, as
whom; which embedder; which address it listens on), with every secret reduced to a short hash.

`serve` records it in the ledger (guard/drift.py) and `memvault preflight` compares a candidate
with it. A hash shows that a password or key changed without storing it: only a 12-hex-digit
prefix of a salted sha256 is kept, never the value.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memvault.config.settings import Settings

# What a drift is counted and alerted on (the metric's `what` label).
DRIFT_KEYS = ("database", "embedder", "listen")


def secret_hash(value: str | None) -> str | None:
    if not value:
        return None
    return hashlib.sha256(b"memvault-config:" + value.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class DatabaseIdentity:
    """Where a database URL points, never its password: backend, host, port, database, user
    (PostgreSQL) or the resolved file (SQLite)."""

    backend: str
    host: str = ""
    port: str = ""
    database: str = ""
    user: str = ""

    def describe(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.database}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def database_identity(url: str) -> DatabaseIdentity:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).expanduser()
        return DatabaseIdentity("sqlite", database=str(path.resolve()))
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    return DatabaseIdentity(
        "postgres", host=str(params.get("host") or "localhost"),
        port=str(params.get("port") or "5432"),
        database=str(params.get("dbname") or params.get("user") or ""),
        user=str(params.get("user") or ""))


def database_password(url: str) -> str | None:
    from memvault.config.redact import dsn_secrets

    found = dsn_secrets(url)
    return found[0] if found else None


@dataclass(frozen=True)
class ConfigFingerprint:
    """What a start runs with. `database`, `embedder` and `listen` are compared for drift;
    `secrets` (hashes) say which credential changed."""

    database: str
    embedder: str
    listen: str
    secrets: dict[str, str | None]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConfigFingerprint:
        return cls(str(data.get("database", "")), str(data.get("embedder", "")),
                   str(data.get("listen", "")), dict(data.get("secrets") or {}))

    def changes(self, other: ConfigFingerprint) -> dict[str, tuple[str, str]]:
        """What differs from `other` in DRIFT_KEYS: key -> (other's value, this one's)."""
        return {key: (getattr(other, key), getattr(self, key)) for key in DRIFT_KEYS
                if getattr(other, key) != getattr(self, key)}

    def changed_secrets(self, other: ConfigFingerprint) -> list[str]:
        return sorted(k for k in set(self.secrets) | set(other.secrets)
                      if self.secrets.get(k) != other.secrets.get(k))


def fingerprint(settings: Settings) -> ConfigFingerprint:
    assert settings.database_url is not None
    embedder = settings.embedder
    if settings.embedder_url and embedder != "local":
        from memvault.config.redact import redact_url

        embedder = f"{embedder} at {redact_url(settings.embedder_url)}"

    def plain(secret: Any) -> str | None:
        return secret.get_secret_value() if secret is not None else None

    return ConfigFingerprint(
        database=database_identity(settings.database_url).describe(),
        embedder=embedder,
        listen=f"{settings.host}:{settings.port}",
        secrets={"database_password": secret_hash(database_password(settings.database_url)),
                 "embedder_api_key": secret_hash(plain(settings.embedder_api_key)),
                 "admin_api_key": secret_hash(plain(settings.admin_api_key)),
                 "backup_encryption_key": secret_hash(plain(settings.backup_encryption_key))})
