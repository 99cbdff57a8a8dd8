"""The error hierarchy. Every error says what went wrong and, in `hint`, what to do next."""

from __future__ import annotations


class MemvaultError(Exception):
    """Base class. `code` is the stable machine-readable name used by the HTTP API."""

    code = "memvault_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(MemvaultError):
    code = "config_invalid"


class InvalidInput(MemvaultError, ValueError):
    """Bad caller input. Subclasses ValueError because mem0 callers catch that."""

    code = "invalid_input"


class NotFound(MemvaultError, ValueError):
    code = "not_found"


class StoreError(MemvaultError):
    code = "datastore_error"


class StoreUnavailable(StoreError):
    code = "datastore_unavailable"


class IndexBuilding(StoreUnavailable):
    """A search needs a vector index that is still being built (HTTP 503): retry shortly."""

    code = "index_building"


class SchemaError(StoreError):
    """The database is not a memvault store, or was written by a newer memvault."""

    code = "schema_incompatible"


class EmbedderError(MemvaultError):
    code = "provider_unavailable"


class EmbedderMismatch(MemvaultError):
    """The configured embedder is not the one that made the store's vectors."""

    code = "embedder_mismatch"


class LLMError(MemvaultError):
    code = "llm_unavailable"


class LLMNotConfigured(LLMError):
    code = "llm_not_configured"


# -- HTTP API and client ------------------------------------------------------------------


class ServerUnreachable(MemvaultError):
    """A MemoryClient could not reach the server; the message names the address tried."""

    code = "server_unreachable"


class Unauthorized(MemvaultError):
    """No API key, or one the server does not know (HTTP 401)."""

    code = "unauthorized"


class Forbidden(MemvaultError):
    """The API key is valid but may not do this (HTTP 403): admin-only, or another namespace."""

    code = "forbidden"


class SafetySnapshotFailed(MemvaultError):
    """A destructive operation was refused because the snapshot that would make it reversible
    could not be taken (HTTP 503): nothing was changed."""

    code = "safety_snapshot_failed"
