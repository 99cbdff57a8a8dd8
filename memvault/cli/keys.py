"""`memvault keys create | list | revoke`: namespace-scoped API keys (stored hashed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from memvault.cli.output import JsonOption, console, fails_with_exit, print_json, print_table

keys_app = typer.Typer(help="Manage namespace-scoped API keys.", no_args_is_help=True)


@contextmanager
def _store(ctx: typer.Context) -> Iterator[Any]:
    from memvault.cli.context import overrides
    from memvault.config import load_settings
    from memvault.store import open_store

    store = open_store(load_settings(overrides(ctx)))
    try:
        yield store
    finally:
        store.close()


@keys_app.command("create")
@fails_with_exit(1)
def create(
    ctx: typer.Context,
    user_id: str | None = typer.Option(None, "--user-id"),
    agent_id: str | None = typer.Option(None, "--agent-id"),
    run_id: str | None = typer.Option(None, "--run-id"),
    label: str | None = typer.Option(None, "--label", help="A note, e.g. who holds the key."),
    as_json: bool = JsonOption,
) -> None:
    """Create a key that can only see and change memories of the given ids. The key is shown
    once; only its hash is stored."""
    from memvault.server.keys import create_key

    with _store(ctx) as store:
        key, token = create_key(store, user_id=user_id, agent_id=agent_id, run_id=run_id,
                                label=label)
    if as_json:
        print_json({**key.public(), "token": token})
        return
    scope = ", ".join(f"{k}={v}" for k, v in key.scope.items())
    console.print(f"created key {key.id} for {scope}", highlight=False)
    console.print(f"\n  {token}\n", highlight=False, soft_wrap=True)
    console.print("This is the only time the key is shown: store it now. Send it as "
                  "`X-API-Key: <key>` or `Authorization: Bearer <key>`.", highlight=False)


@keys_app.command("list")
@fails_with_exit(1)
def list_(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List keys (ids, scopes, state; never the keys themselves)."""
    from memvault.server.keys import list_keys

    with _store(ctx) as store:
        keys = [k.public() for k in list_keys(store)]
    if as_json:
        print_json(keys)
        return
    print_table(f"{len(keys)} API keys", ["id", "scope", "label", "created", "state"], [
        [k["id"], ", ".join(f"{a}={b}" for a, b in k["scope"].items()), k["label"] or "",
         k["created_at"], "active" if k["active"] else f"revoked {k['revoked_at']}"]
        for k in keys
    ])


@keys_app.command("revoke")
@fails_with_exit(1)
def revoke(ctx: typer.Context, key_id: str = typer.Argument(..., help="The key's id."),
           as_json: bool = JsonOption) -> None:
    """Revoke a key; a running server refuses it from its next request on."""
    from memvault.server.keys import revoke_key

    with _store(ctx) as store:
        key = revoke_key(store, key_id)
    if as_json:
        print_json(key.public())
    else:
        console.print(f"revoked key {key.id} at {key.revoked_at}", highlight=False)
