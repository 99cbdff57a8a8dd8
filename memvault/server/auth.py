"""Who is calling: the admin (MEMVAULT_ADMIN_API_KEY, or anyone when the server runs open on
loopback) or a namespace-scoped key that may only see and change its own memories.

Bodies are mem0's: 401 "Authentication required. ..." / "Invalid API key.", 403 "Admin role
required."; a scoped key asking for another namespace gets 403 naming only its own scope, and
a memory outside its scope is reported as not found (its existence is not revealed).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from memvault.server import keys as keyring
from memvault.server.deps import context_of
from memvault.store import ENTITY_KEYS, MemoryRecord

AUTH_REQUIRED = "Authentication required. Provide a Bearer token or X-API-Key header."
INVALID_KEY = "Invalid API key."
ADMIN_REQUIRED = "Admin role required."

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="an admin or namespace-scoped API key")
_bearer = HTTPBearer(auto_error=False, description="the same key as a Bearer token")


@dataclass(frozen=True)
class Principal:
    admin: bool
    key_id: str | None = None
    scope: dict[str, str] = field(default_factory=dict)
    via_admin_key: bool = False

    @property
    def actor(self) -> str:
        """Who the journal records as the author of a change."""
        if self.key_id:
            return f"api:key:{self.key_id}"
        return "api:admin" if self.via_admin_key else "api"

    def entities(self, user_id: Any, agent_id: Any, run_id: Any) -> dict[str, Any]:
        """The ids a request may use: the scope fills what is missing, a different value is
        refused. The admin's ids pass through unchanged."""
        given = dict(zip(ENTITY_KEYS, (user_id, agent_id, run_id), strict=True))
        if self.admin:
            return given
        for key, value in self.scope.items():
            if given[key] is None:
                given[key] = value
            elif given[key] != value:
                raise HTTPException(403, f"This API key may only access {key}={value!r}.")
        return given

    def check_filters(self, filters: Any) -> None:
        """A top-level equality on a scoped id that names another namespace is refused (the
        scope is also ANDed with every filter, so nothing else can widen it)."""
        if self.admin or not isinstance(filters, dict):
            return
        for key, value in self.scope.items():
            wanted = filters.get(key)
            if isinstance(wanted, dict) and set(wanted) == {"eq"}:
                wanted = wanted["eq"]
            if isinstance(wanted, str) and wanted not in (value, "*"):
                raise HTTPException(403, f"This API key may only access {key}={value!r}.")

    def can_see(self, entities: dict[str, Any]) -> bool:
        return self.admin or all(entities.get(k) == v for k, v in self.scope.items())

    def can_see_record(self, record: MemoryRecord) -> bool:
        return self.can_see({k: getattr(record, k) for k in ENTITY_KEYS})


def _token(request: Request, api_key: str | None,
           bearer: HTTPAuthorizationCredentials | None) -> str | None:
    if api_key:
        return api_key
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    # mem0's platform client (mem0ai.MemoryClient) sends "Authorization: Token <key>".
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "token" and credentials.strip():
        return credentials.strip()
    return None


async def authenticate(
    request: Request,
    api_key: str | None = Security(_api_key_header),
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
) -> Principal:
    context = context_of(request)
    admin_key = context.admin_key
    token = _token(request, api_key, bearer)
    if token is None:
        if admin_key is None:
            return Principal(admin=True)  # open mode: loopback only, warned at startup
        raise HTTPException(401, AUTH_REQUIRED, headers={"WWW-Authenticate": "Bearer"})
    if admin_key is not None and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Principal(admin=True, via_admin_key=True)
    # Async on purpose: most requests need no I/O here (admin key, open mode), and a sync
    # dependency would cost every request a hop through the threadpool.
    key = await run_in_threadpool(keyring.find_key, context.runtime.memory.store, token)
    if key is None:
        # Also in open mode: a stale or mistyped key fails loudly instead of acting as admin.
        raise HTTPException(401, INVALID_KEY, headers={"WWW-Authenticate": "Bearer"})
    return Principal(admin=False, key_id=key.id, scope=dict(key.scope))


async def require_admin(principal: Principal = Depends(authenticate)) -> Principal:
    if not principal.admin:
        raise HTTPException(403, ADMIN_REQUIRED)
    return principal
