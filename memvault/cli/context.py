"""What every command reads from the root command line: the global flags (--data-dir,
--database-url, --embedder) as settings overrides, and the local Memory they name."""

from __future__ import annotations

from typing import Any

import typer


def overrides(ctx: typer.Context, **more: Any) -> dict[str, Any]:
    """The root's global flags plus `more`, without the ones left unset."""
    flags = dict(ctx.find_root().obj or {})
    flags.update(more)
    return {k: v for k, v in flags.items() if v is not None}


def open_memory(ctx: typer.Context, **more: Any) -> Any:
    from memvault.config import load_settings
    from memvault.memory import Memory

    return Memory(load_settings(overrides(ctx, **more)), actor="cli")
