"""What every console page shares: who is looking (the session's key through the API's own
`authenticate`, so a scoped key sees in the console exactly what it sees over REST), the page
renderer (security headers, the session cookie), form parsing with the CSRF check, and the
refusal of memory pages while the guard refuses the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from memvault.runtime import Runtime
from memvault.server.auth import Principal, authenticate
from memvault.server.console.history import CountHistory
from memvault.server.console.overview import AlertView, BackupListing, firing_alerts
from memvault.server.console.session import (
    CSRF_FIELD,
    Session,
    Sessions,
    check_csrf,
    set_cookie,
)
from memvault.server.loopback import is_loopback

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_FIELDS = 20
# Console pages load nothing but their own stylesheet: no script, no other host, no framing.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


class SignInNeeded(Exception):
    """Raised by `viewer` when the caller must sign in; the app answers with a redirect."""

    def __init__(self, next_path: str, message: str | None = None) -> None:
        super().__init__(message or "sign in")
        self.next_path = next_path
        self.message = message


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    session: Session | None

    @property
    def signed_in(self) -> bool:
        return self.session is not None and self.session.api_key is not None


@dataclass
class Console:
    """The console of one app: its runtime, sessions, the count history and backup listing
    it keeps between views."""

    runtime: Runtime
    admin_key_set: bool
    redact: Any
    sessions: Sessions
    history: CountHistory
    backups: BackupListing
    templates: Jinja2Templates

    @classmethod
    def over(cls, runtime: Runtime, admin_key_set: bool, redact: Any) -> Console:
        templates = Jinja2Templates(directory=str(TEMPLATES))
        for page in TEMPLATES.glob("*.html"):  # compiled now, not in the first views
            templates.get_template(page.name)
        return cls(runtime, admin_key_set, redact, Sessions(), CountHistory(runtime.memory),
                   BackupListing(), templates)

    def start(self) -> None:
        """At app start: the count history's first read of the journal, in the background."""
        self.history.start()

    async def viewer(self, request: Request) -> Viewer:
        """The caller, from the session's key (none: the admin in open mode on loopback)."""
        session = self.sessions.of(request)
        token = session.api_key if session is not None else None
        if token is None and not self.admin_key_set and not _loopback_host(request):
            # Open mode answers loopback only; a page reached under another name is a DNS
            # rebinding (a web site's name pointed at 127.0.0.1 to read the console).
            raise HTTPException(403, "Without MEMVAULT_ADMIN_API_KEY the console answers only "
                                "at a loopback address (http://127.0.0.1:<port>/ui).")
        try:
            principal = await authenticate(request, api_key=token, bearer=None)
        except HTTPException as exc:
            if exc.status_code != 401:
                raise
            message = None
            if token is not None and session is not None:
                self.sessions.drop(session.id)  # revoked or rotated since sign-in
                message = "The key of this session is no longer valid: sign in again."
            raise SignInNeeded(_path_of(request), message) from None
        return Viewer(principal, session)

    def page(self, request: Request, viewer: Viewer | None, name: str,
             context: dict[str, Any], status: int = 200) -> HTMLResponse:
        session = viewer.session if viewer is not None else self.sessions.of(request)
        new = session is None
        if session is None:
            session = self.sessions.create(None)
        response = self.templates.TemplateResponse(request, name, {
            **context, "viewer": viewer, "csrf": session.csrf,
            "open_mode": not self.admin_key_set}, status_code=status)
        protect(response)
        if new:
            set_cookie(response, request, session)
        return response

    def refused(self) -> list[AlertView]:
        """The guard's alerts for which the memory routes answer 503 (guard/refuse.py)."""
        guard = self.runtime.guard
        return [a for a in firing_alerts(guard.verdict if guard else None) if a.refusing]

    def refused_page(self, request: Request, viewer: Viewer,
                     alerts: list[AlertView]) -> HTMLResponse:
        return self.page(request, viewer, "refused.html", {"alerts": alerts}, status=503)

    def error_page(self, request: Request, viewer: Viewer | None, status: int,
                   message: str, hint: str | None = None) -> HTMLResponse:
        return self.page(request, viewer, "error.html",
                         {"status": status, "message": message, "hint": hint}, status=status)


def _loopback_host(request: Request) -> bool:
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return is_loopback(name)


def protect(response: HTMLResponse | RedirectResponse) -> None:
    response.headers["content-security-policy"] = CSP
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["cache-control"] = "no-store"


def redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    protect(response)
    return response


def _path_of(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{request.url.path}{query}"


def signin_url(next_path: str) -> str:
    return f"/ui/signin?next={quote(next_path, safe='')}"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console page of this server, never another site."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui"


async def read_form(request: Request, session: Session | None) -> dict[str, str]:
    """The url-encoded form of a POST, after the CSRF check (403 without this session's
    token); 415 for another encoding, 400 for a malformed body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "console forms are sent as application/x-www-form-urlencoded")
    body = await request.body()
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f"the form could not be read: {exc}") from None
    form = {key: values[-1] for key, values in parsed.items()}
    check_csrf(request, session, form.get(CSRF_FIELD))
    return form
