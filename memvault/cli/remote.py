"""`--url`: run `add`, `search` and `status` against a running server instead of the store."""

from __future__ import annotations

from typing import Any

import typer

UrlOption = typer.Option(None, "--url", envvar="MEMVAULT_URL",
                         help="Talk to a running server, e.g. http://127.0.0.1:8888 "
                         "(MEMVAULT_URL).")
ApiKeyOption = typer.Option(None, "--api-key", envvar="MEMVAULT_API_KEY",
                            help="API key for --url (MEMVAULT_API_KEY).", show_default=False)


def open_backend(ctx: typer.Context, url: str | None, api_key: str | None) -> Any:
    """A MemoryClient for --url, else the local Memory (both are context managers)."""
    if url:
        from memvault.client import MemoryClient

        return MemoryClient(url, api_key=api_key)
    from memvault.cli.context import open_memory

    return open_memory(ctx)


def remote_status(url: str, api_key: str | None) -> dict[str, Any]:
    """GET /status from a server; unreachable or failing answers are CRITICAL reports."""
    from memvault.client import MemoryClient
    from memvault.errors import MemvaultError
    from memvault.guard.status import CRITICAL, finish

    try:
        with MemoryClient(url, api_key=api_key, timeout=10) as client:
            return client.status()
    except MemvaultError as exc:
        return finish({"url": url}, [{"name": "server", "state": CRITICAL, "message": str(exc)}])
