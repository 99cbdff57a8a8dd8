"""`memvault watch mem0`: guard a running mem0 pgvector collection in place (a sidecar with
/livez /readyz /status /metrics, like `serve`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from memvault.cli.context import overrides
from memvault.cli.output import console, print_error, print_json
from memvault.errors import MemvaultError

watch_app = typer.Typer(help="Guard a running store of another system in place.",
                        no_args_is_help=True)


@watch_app.command("mem0")
def watch_mem0(
    ctx: typer.Context,
    dsn: str = typer.Option(..., "--dsn", help="mem0's PostgreSQL, e.g. "
                            "postgresql://watcher:PASSWORD@pgvector:5432/postgres (a role with "
                            "SELECT on the table is enough)."),
    collection: str = typer.Option("memories", "--collection",
                                   help="mem0's table: 'memories' (mem0's server), 'mem0' "
                                   "(the library's default)."),
    host: str | None = typer.Option(None, "--host", help="MEMVAULT_HOST"),
    port: int | None = typer.Option(None, "--port", help="MEMVAULT_PORT"),
    adopt: bool = typer.Option(False, "--adopt", help="Accept mem0's table as it is now as "
                               "the guarded one (after a deliberate move, reset or model "
                               "switch), recorded in the ledger."),
) -> None:
    """Back up, journal, ledger and alert on a running mem0's pgvector table, read-only."""
    from memvault.server.watch_app import run_watch

    try:
        run_watch(overrides(ctx, host=host, port=port), dsn, collection, adopt=adopt)
    except MemvaultError as exc:
        print_error(exc.message, exc.hint)
        raise typer.Exit(1) from None


def restore_into_mem0(settings: Any, dsn: str, collection: str, which: str, at: str | None, *,
                      yes: bool, lineage: str | None, allow_loss: bool, dry_run: bool,
                      as_json: bool, bars: Callable[[bool], Any]) -> None:
    """`memvault restore ... --to-mem0 DSN`: the plan (--dry-run), or the restore and its
    verified counts. `bars`: the restore command's progress display."""
    from memvault.backup import plan_restore
    from memvault.watch import restore_to_mem0

    if dry_run:
        plan = plan_restore(settings, which, at, lineage=lineage)
        print_json({"dry_run": True, "to_mem0": True, "plan": plan.to_json()}) if as_json \
            else console.print_json(data=plan.to_json())
        return
    with bars(not as_json) as progress:
        report = restore_to_mem0(settings, dsn, collection, which, at, yes=yes,
                                 lineage=lineage, allow_loss=allow_loss, progress=progress)
    if as_json:
        print_json(report.to_json())
        return
    console.print(f"restored {report.written} memories into mem0's {report.target} "
                  f"({report.reembedded} re-embedded, vector({report.dims})); counts per "
                  f"namespace verified: {report.counts}. mem0's history SQLite is left as it "
                  "is.", highlight=False)
