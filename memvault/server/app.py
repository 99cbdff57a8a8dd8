"""The FastAPI application over a Runtime: mem0's routes, the operations endpoints, the backup
and guard routes and checks, auth, errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse
from prometheus_client import CollectorRegistry

from memvault.guard.api import GuardMetrics, guard_check
from memvault.guard.refuse import RefuseUnguardedStore
from memvault.guard.watchdog import Guard
from memvault.memory import Memory
from memvault.runtime import Runtime
from memvault.server import ops, platform, routes
from memvault.server.auth import require_admin
from memvault.server.backups_api import METRICS as BACKUP_METRICS
from memvault.server.backups_api import backup_router, restore_check
from memvault.server.console import mount_console
from memvault.server.context import MAX_BODY_BYTES, RequestContext
from memvault.server.deps import Check, ServerContext
from memvault.server.errors import Redactor, install_error_handlers
from memvault.server.mcp_http import mcp_lifespan, mount_mcp
from memvault.server.metrics import StoreCollector
from memvault.version import __version__

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.guard.checks import Verdict

log = logging.getLogger("memvault.server")

DESCRIPTION = """mem0-compatible memory API. Authenticate with `X-API-Key: <key>` or
`Authorization: Bearer <key>`: the admin key (MEMVAULT_ADMIN_API_KEY) sees everything, a key
from `memvault keys create` only its own namespace."""


def _guard_readiness(guard: Guard | None, memory: Memory) -> Check:
    return guard_check(guard)


def create_app(runtime: Runtime, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The app over `runtime`: its jobs start when the app starts and stop when it stops."""
    settings = runtime.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        console.start()  # reads the journal for the console's chart in the background
        try:
            async with mcp_lifespan(mcp_server):
                yield
        finally:
            runtime.stop()

    # /docs and /redoc come from the console's vendored assets (mount_console), not a CDN.
    app = FastAPI(title="memvault", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    registry = CollectorRegistry()
    registry.register(StoreCollector(runtime.memory))
    for metric in BACKUP_METRICS:
        # ValueError: already registered (several apps in one process)
        with contextlib.suppress(ValueError):
            registry.register(metric)
    guard = runtime.guard
    if guard is not None:
        registry.register(GuardMetrics(guard))
    app.state.context = ServerContext(
        runtime=runtime, redact=Redactor(settings),
        admin_key=settings.admin_api_key.get_secret_value() if settings.admin_api_key else None,
        readiness_checks=(ops.store_check, ops.embedder_check, restore_check,
                          partial(_guard_readiness, guard)),
        metrics=registry)

    install_error_handlers(app)
    app.include_router(routes.router)
    app.include_router(ops.router)
    app.include_router(platform.router)
    mcp_server = mount_mcp(app, runtime)
    app.include_router(backup_router(runtime.backups), dependencies=[Depends(require_admin)])
    console = mount_console(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    def verdict() -> Verdict | None:
        return guard.verdict if guard is not None else None

    app.add_middleware(RefuseUnguardedStore, verdict=verdict)
    app.add_middleware(RequestContext, max_body_bytes=max_body_bytes)
    return app


def app_over(settings: Settings, memory: Memory, *, guard: Guard | None = None,
             max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The API alone over an open Memory, no jobs (tests, tools); `guard`: one started
    elsewhere whose verdict the API follows."""
    return create_app(Runtime(settings, memory, jobs=False, guard=guard),
                      max_body_bytes=max_body_bytes)
