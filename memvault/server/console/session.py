"""Console sessions: the API key a person signed in with, held server-side under a random id
that travels in an `HttpOnly`, `SameSite=Strict` cookie (never readable by page scripts, never
sent by another site's request), and a per-session token every form that changes something must
echo back (CSRF). Sessions live in the app's `Sessions` object, in memory: a restart signs
everyone out, which is the safe direction."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from fastapi.responses import Response

COOKIE = "memvault_console"
COOKIE_PATH = "/ui"
IDLE_SECONDS = 12 * 3600.0  # a session unused this long is forgotten
MAX_SESSIONS = 10_000  # the oldest sessions go first beyond this (bounded memory)
CSRF_FIELD = "csrf_token"


@dataclass
class Session:
    id: str
    api_key: str | None  # None: not signed in (open mode on loopback acts as admin)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    used_at: float = 0.0


class Sessions:
    """Every console session of one app (bounded, idle ones expire)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._by_id.get(session_id)
            if session is None:
                return None
            if now - session.used_at > IDLE_SECONDS:
                del self._by_id[session_id]
                return None
            session.used_at = now
            self._by_id.move_to_end(session_id)
            return session

    def create(self, api_key: str | None) -> Session:
        session = Session(id=secrets.token_urlsafe(32), api_key=api_key, used_at=self._clock())
        with self._lock:
            self._by_id[session.id] = session
            while len(self._by_id) > MAX_SESSIONS:
                self._by_id.popitem(last=False)
        return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._by_id.pop(session_id, None)

    def of(self, request: Request) -> Session | None:
        return self.get(request.cookies.get(COOKIE))


def set_cookie(response: Response, request: Request, session: Session) -> None:
    response.set_cookie(COOKIE, session.id, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


CSRF_REFUSED = ("The form is stale or came from another site: nothing was changed. Reload the "
                "page and submit it again.")


# What a browser says (Sec-Fetch-Site) about a request started from the console's own pages
# ("none": typed or bookmarked). Judged by the browser from the URLs it sees, so a reverse proxy
# that rewrites Host (docs/mcp.md) changes nothing.
OWN_PAGES = frozenset({"same-origin", "none"})


def check_csrf(request: Request, session: Session | None, token: str | None) -> None:
    """403 unless the form carries this session's token and the browser, when it says where the
    request came from, says from this site's own pages (not another port of the same host)."""
    fetched_from = request.headers.get("sec-fetch-site")
    if fetched_from is not None and fetched_from not in OWN_PAGES:
        raise HTTPException(403, CSRF_REFUSED)
    if session is None or not token or not hmac.compare_digest(token.encode(),
                                                               session.csrf.encode()):
        raise HTTPException(403, CSRF_REFUSED)
