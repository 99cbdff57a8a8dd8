"""The HTTP side of `memvault watch mem0`: /livez, /readyz, /status and /metrics of the
watcher, the same endpoints `serve` has, on --port. /status and /metrics take the admin key
when one is set; without one the sidecar listens on loopback only (check_bind, as `serve`)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from memvault.config import Settings, load_settings
from memvault.config.redact import Redactor, dsn_secrets
from memvault.errors import MemvaultError
from memvault.server.run import check_bind
from memvault.version import __version__
from memvault.watch import Watcher

log = logging.getLogger("memvault.watch")


def _admin(request: Request, settings: Settings) -> JSONResponse | None:
    """None when the caller may read /status and /metrics, else the 401 to answer."""
    key = settings.admin_api_key
    if key is None:
        return None
    header = request.headers.get("x-api-key") or ""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = header or (token if scheme.lower() in ("bearer", "token") else "")
    if given and hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        return None
    return JSONResponse({"error": "unauthorized", "message": "the admin API key is required",
                         "hint": "send X-API-Key or Authorization: Bearer <key>"},
                        status_code=401)


def create_watch_app(watcher: Watcher, settings: Settings) -> FastAPI:
    redact = Redactor([*dsn_secrets(watcher.table.dsn)])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()

    app = FastAPI(title="memvault watch mem0", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/livez")
    def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        # Where mem0's data lives (hosts, database names) is for the admin only, as on serve.
        admin = settings.admin_api_key is None or _admin(request, settings) is None
        failing = [{**c, "message": redact(str(c["message"])) if admin else
                    "details with the admin key"} for c in watcher.ready()]
        return JSONResponse({"status": "fail" if failing else "ok", "failing": failing},
                            status_code=503 if failing else 200)

    @app.get("/status")
    def status(request: Request) -> Any:
        refused = _admin(request, settings)
        if refused is not None:
            return refused
        return JSONResponse(watcher.status())

    @app.get("/metrics")
    def metrics(request: Request) -> Any:
        refused = _admin(request, settings)
        if refused is not None:
            return refused
        body = generate_latest(REGISTRY) + generate_latest(watcher.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def run_watch(flags: dict[str, Any], dsn: str, collection: str, *, adopt: bool = False
              ) -> None:
    import uvicorn

    settings = load_settings(flags)
    check_bind(settings.host, settings.admin_api_key is not None)
    watcher = Watcher(settings, dsn, collection, adopt=adopt)
    try:
        app = create_watch_app(watcher, settings)
        server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port,
                                               log_level="info", timeout_graceful_shutdown=10))
        with suppress(SystemExit):
            server.run()
    finally:
        watcher.close()
    if not server.started:
        raise MemvaultError(f"could not listen on {settings.host}:{settings.port}",
                            hint="is another process using the port? pass --port")
