"""The web console at `/ui` (server-rendered pages, no script, every asset shipped in the wheel)
and the API documentation at `/docs` and `/redoc` from vendored assets. See docs/console.md."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from memvault.server.console.browser import browser_router
from memvault.server.console.docs import STATIC, docs_router
from memvault.server.console.pages import overview_router
from memvault.server.console.web import Console, SignInNeeded, redirect, signin_url
from memvault.server.deps import app_context

__all__ = ["mount_console"]


def mount_console(app: FastAPI) -> Console:
    """Add `/ui`, its static files, `/docs` and `/redoc` to `app` (made with docs_url=None and
    redoc_url=None) over the app's runtime."""
    context = app_context(app)
    console = Console.over(context.runtime, context.admin_key is not None, context.redact)

    async def to_signin(request: Request, exc: Exception) -> RedirectResponse:
        assert isinstance(exc, SignInNeeded)
        target = signin_url(exc.next_path)
        if exc.message:
            target += "&expired=1"
        return redirect(target)

    app.add_exception_handler(SignInNeeded, to_signin)
    app.mount(STATIC, StaticFiles(directory=Path(__file__).parent / "static"),
              name="console-static")
    app.include_router(overview_router(console))
    app.include_router(browser_router(console))
    app.include_router(docs_router(app.title, app.openapi_url or "/openapi.json"))
    return console
