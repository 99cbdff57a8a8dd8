"""Errors as mem0's shapes: 4xx `{"detail": ...}`, backend failures 502/503
`{"detail", "code", "request_id"}`, and never a bare 500 with a traceback.

Every message passes through the Redactor first, so a secret that slipped into an exception
(a DSN password, an API key) never reaches a response or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from memvault.config import Settings, secret_values
from memvault.config.redact import Redactor as TextRedactor
from memvault.errors import (
    ConfigError,
    EmbedderError,
    EmbedderMismatch,
    Forbidden,
    InvalidInput,
    LLMError,
    LLMNotConfigured,
    MemvaultError,
    NotFound,
    SafetySnapshotFailed,
    SchemaError,
    StoreError,
    StoreUnavailable,
    Unauthorized,
)
from memvault.server.deps import context_of
from memvault.server.locations import LocationHider, caller_is_admin

log = logging.getLogger("memvault.server")

# (class, HTTP status, mem0 `code`); the first match wins, so subclasses come first.
ERROR_STATUS: list[tuple[type[MemvaultError], int, str | None]] = [
    (NotFound, 404, None),
    (InvalidInput, 400, None),
    (Unauthorized, 401, None),
    (Forbidden, 403, None),
    (SchemaError, 503, "schema_incompatible"),
    (StoreUnavailable, 503, "datastore_unavailable"),
    (StoreError, 502, "datastore_error"),
    (EmbedderMismatch, 503, "embedder_mismatch"),
    (EmbedderError, 502, "provider_unavailable"),
    (LLMNotConfigured, 503, "provider_unavailable"),
    (LLMError, 502, "provider_unavailable"),
    (ConfigError, 503, "config_invalid"),
    (SafetySnapshotFailed, 503, "safety_snapshot_failed"),
    (MemvaultError, 500, "internal_error"),
]


class Redactor(TextRedactor):
    """Masks credentials in URLs and DSNs and the literal values of every configured secret."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(secret_values(settings))


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def error_body(exc: MemvaultError, redact: Callable[[str], str], rid: str
               ) -> tuple[int, dict[str, Any]]:
    status, code = next((s, c) for cls, s, c in ERROR_STATUS if isinstance(exc, cls))
    body: dict[str, Any] = {"detail": redact(str(exc))}
    if code is not None:
        body.update(code=code, request_id=rid, error=exc.code)
    return status, body


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MemvaultError)
    async def memvault_error(request: Request, exc: MemvaultError) -> JSONResponse:
        rid = request_id(request)
        status, body = error_body(exc, context_of(request).redact, rid)
        if status >= 500:
            log.error("%s %s -> %d %s [request %s]: %s", request.method, request.url.path,
                      status, body.get("code"), rid, body["detail"])
            if not caller_is_admin(request):
                body["detail"] = LocationHider(context_of(request).settings)(body["detail"])
        return JSONResponse(body, status_code=status)
