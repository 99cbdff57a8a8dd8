"""What a request handler may use, as typed FastAPI dependencies: the process's `Runtime`
(memvault/runtime.py) and what the app derives from the settings once (the redactor, the admin
key, the readiness checks, the metrics registry). `create_app` puts one `ServerContext` on the
app; handlers name what they need (`memory: MemoryDep`), middleware and exception handlers
call `context_of(request)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry

from memvault.memory import Memory

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.runtime import Runtime

Check = dict[str, Any]  # {"name", "ok", "message", ...}
ReadinessCheck = Callable[[Memory], Check]


@dataclass(frozen=True)
class ServerContext:
    runtime: Runtime
    redact: Callable[[str], str]  # secrets and URL credentials out of any text we send
    admin_key: str | None  # None: open mode (loopback only)
    readiness_checks: tuple[ReadinessCheck, ...]
    metrics: CollectorRegistry

    @property
    def settings(self) -> Settings:
        return self.runtime.settings


def context_of(request: Request) -> ServerContext:
    return app_context(request.app)


def app_context(app: FastAPI) -> ServerContext:
    return cast(ServerContext, app.state.context)


def runtime_of(app: FastAPI) -> Runtime:
    return app_context(app).runtime


def memory_of(request: Request) -> Memory:
    return context_of(request).runtime.memory


Context = Annotated[ServerContext, Depends(context_of)]
MemoryDep = Annotated[Memory, Depends(memory_of)]
