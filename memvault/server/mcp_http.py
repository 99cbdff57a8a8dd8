"""`/mcp` on `memvault serve`: the MCP tools over streamable HTTP in the API's own process (one
Memory, one guard), behind the REST API's keys. The key is checked before the SDK sees the
request, with the REST dependency itself (`auth.authenticate`), so the two cannot drift: no
key on a server with an admin key is a 401, an unknown key a 401, a scoped key's principal
rides on the request to every tool (`mcp_tools.principal_of`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.routing import Route

from memvault.server.auth import authenticate
from memvault.server.mcp_tools import build_server

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP

    from memvault.runtime import Runtime

PATH = "/mcp"


class Authenticated:
    """ASGI layer in front of the SDK's endpoint: the REST authentication, or its 401/403."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        bearer = (HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
                  if scheme.lower() == "bearer" and token.strip() else None)
        try:
            principal = await authenticate(request, request.headers.get("x-api-key"), bearer)
        except HTTPException as exc:
            body = json.dumps({"detail": exc.detail, "code": "auth_failed"}).encode()
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]
            headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            await send({"type": "http.response.start", "status": exc.status_code,
                        "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def mount_mcp(app: FastAPI, runtime: Runtime) -> FastMCP:
    """Adds `/mcp` to `app`; the caller runs `mcp_lifespan(server)` inside the app's lifespan
    (the SDK's session manager owns a task group for the requests)."""
    guard = runtime.guard
    host = runtime.settings.host
    # Beyond loopback the bound name is accepted too (with and without a port); a wildcard
    # bind names no host, so only loopback Host values pass (docs/mcp.md).
    allowed = () if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::") else (
        host, f"{host}:*")
    server = build_server(runtime.memory, lambda: guard.verdict if guard else None, allowed)
    sdk_app = server.streamable_http_app()
    endpoint = next(r.endpoint for r in sdk_app.routes
                    if isinstance(r, Route) and r.path == server.settings.streamable_http_path)
    app.router.routes.append(Route(PATH, endpoint=Authenticated(endpoint),
                                   methods=["GET", "POST", "DELETE"]))
    return server


@asynccontextmanager
async def mcp_lifespan(server: FastMCP) -> AsyncIterator[None]:
    async with server.session_manager.run():
        yield
