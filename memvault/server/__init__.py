"""The HTTP server: mem0's REST API, operations endpoints, auth (see docs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memvault.server.app import create_app
    from memvault.server.run import run_server

__all__ = ["create_app", "run_server"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI imports this package for `serve` only.
    if name == "create_app":
        from memvault.server.app import create_app

        return create_app
    if name == "run_server":
        from memvault.server.run import run_server

        return run_server
    raise AttributeError(name)
