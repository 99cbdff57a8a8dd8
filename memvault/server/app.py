"""The FastAPI application: mem0's routes, operations endpoints, auth, errors, extensions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse
from prometheus_client import CollectorRegistry

from memvault.config import Settings
from memvault.embed import make_embedder
from memvault.memory import Memory
from memvault.server import ops, routes
from memvault.server.auth import require_admin
from memvault.server.batcher import AddBatcher
from memvault.server.context import MAX_BODY_BYTES, RequestContext
from memvault.server.embed_batcher import BatchingEmbedder
from memvault.server.errors import Redactor, install_error_handlers
from memvault.server.extensions import BackgroundJob, load_extensions
from memvault.server.metrics import StoreCollector
from memvault.version import __version__

log = logging.getLogger("memvault.server")

DESCRIPTION = """mem0-compatible memory API. Authenticate with `X-API-Key: <key>` or
`Authorization: Bearer <key>`: the admin key (MEMVAULT_ADMIN_API_KEY) sees everything, a key
from `memvault keys create` only its own namespace."""


def server_embedder(settings: Settings) -> BatchingEmbedder:
    """The configured embedder as the server runs it: behind a batcher, which hands whatever
    texts are waiting to one model call. The bundled model runs each text alone on one core,
    two texts at a time (bench/bench_server.py: adds 88 -> 126/s against one at a time,
    searches unchanged)."""
    if settings.embedder == "local":
        from memvault.embed.local import LocalEmbedder

        return BatchingEmbedder(LocalEmbedder(threads=2))
    return BatchingEmbedder(make_embedder(settings.embedder, settings))


def create_app(
    settings: Settings,
    memory: Memory | None = None,
    *,
    background: Sequence[BackgroundJob] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """Build the app. Without `memory` one is opened from `settings` (and closed on shutdown).
    `background` jobs are started when the app starts and stopped when it stops."""
    owned = memory is None
    memory = memory or Memory(settings, actor="api", embedder=server_embedder(settings))
    embedder = memory.embedder
    if not isinstance(embedder, BatchingEmbedder):
        # Concurrent requests share model calls (see embed_batcher.py).
        embedder = BatchingEmbedder(embedder)
        memory._embedder = embedder  # the server decides how its Memory embeds
    batcher = AddBatcher(memory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started: list[BackgroundJob] = []
        try:
            for job in background:
                job.start()
                started.append(job)
            yield
        finally:
            for job in reversed(started):
                try:
                    job.stop()
                except Exception:
                    log.exception("stopping background job %r failed", job)
            batcher.stop()
            embedder.stop()
            if owned:
                memory.close()

    app = FastAPI(title="memvault", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.memory = memory
    app.state.admin_key = (settings.admin_api_key.get_secret_value()
                           if settings.admin_api_key else None)
    app.state.redact = Redactor(settings)
    app.state.add_batcher = batcher
    app.state.embed_batcher = embedder
    app.state.readiness_checks = list(ops.DEFAULT_READINESS_CHECKS)
    registry = CollectorRegistry()
    registry.register(StoreCollector(memory))
    app.state.metrics_registry = registry

    install_error_handlers(app)
    app.include_router(routes.router)
    app.include_router(ops.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    # Hook for the backup and guard concerns (see memvault/server/extensions.py).
    for module in load_extensions():
        if getattr(module, "router", None) is not None:
            app.include_router(module.router, dependencies=[Depends(require_admin)])
        if getattr(module, "public_router", None) is not None:
            app.include_router(module.public_router)
        install: Any = getattr(module, "install", None)
        if install is not None:
            install(app)

    app.add_middleware(RequestContext, max_body_bytes=max_body_bytes)
    return app
