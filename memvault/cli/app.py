"""The `memvault` command line (Typer + Rich). Every read command takes --json."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from memvault.cli.alerts import alerts_app
from memvault.cli.backup import backup_app, restore
from memvault.cli.context import overrides
from memvault.cli.doctor import doctor
from memvault.cli.drill import drill
from memvault.cli.guard import adopt
from memvault.cli.keys import keys_app
from memvault.cli.mcp_stdio import mcp
from memvault.cli.migrate import export, import_app
from memvault.cli.output import (
    JsonOption,
    console,
    fails_with_exit,
    print_error,
    print_json,
    print_table,
)
from memvault.cli.preflight import preflight
from memvault.cli.reembed import reembed
from memvault.cli.remote import ApiKeyOption, UrlOption, open_backend, remote_status
from memvault.cli.watch import watch_app
from memvault.errors import MemvaultError

app = typer.Typer(
    name="memvault",
    help="Long-term memory for AI agents that cannot silently lose what it remembers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)

# Every command is registered in this module, one way: command modules never import it.
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(backup_app, name="backup")
app.add_typer(import_app, name="import")
app.add_typer(alerts_app, name="alerts")
app.add_typer(watch_app, name="watch")


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(None, "--data-dir", help="MEMVAULT_DATA_DIR"),
    database_url: str | None = typer.Option(None, "--database-url", help="MEMVAULT_DATABASE_URL"),
    embedder: str | None = typer.Option(None, "--embedder", help="MEMVAULT_EMBEDDER"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log to stderr."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"data_dir": data_dir, "database_url": database_url, "embedder": embedder}


@config_app.command("show")
@fails_with_exit(1)
def config_show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Print every effective setting, where it came from, secrets redacted."""
    from memvault.config import describe_settings, load_settings

    flags = overrides(ctx)
    rows = describe_settings(load_settings(flags), flags)
    if as_json:
        print_json({row["key"]: {"value": row["value"], "source": row["source"]} for row in rows})
    else:
        print_table("memvault configuration", ["key", "value", "source"],
                    [[r["key"], r["value"], r["source"]] for r in rows])


@app.command()
@fails_with_exit(1)
def add(
    ctx: typer.Context,
    text: str = typer.Argument(..., help="The text to remember."),
    user_id: str | None = typer.Option(None, "--user-id"),
    agent_id: str | None = typer.Option(None, "--agent-id"),
    run_id: str | None = typer.Option(None, "--run-id"),
    metadata: str | None = typer.Option(None, "--metadata", help='JSON object, e.g. {"k": 1}'),
    as_json: bool = JsonOption,
    url: str | None = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Remember TEXT verbatim in a namespace."""
    import json

    from memvault.errors import InvalidInput

    try:
        meta = json.loads(metadata) if metadata else None
    except ValueError as exc:
        raise InvalidInput(f"--metadata is not valid JSON: {exc}") from None
    with open_backend(ctx, url, api_key) as memory:
        result = memory.add(text, user_id=user_id, agent_id=agent_id, run_id=run_id,
                            metadata=meta, infer=False)
    if as_json:
        print_json(result)
    else:
        for item in result["results"]:
            verb = "added" if item["event"] == "ADD" else "already stored"
            console.print(f"{verb} {item['id']}: {item['memory']}", highlight=False)


@app.command()
@fails_with_exit(1)
def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What to look for."),
    user_id: str | None = typer.Option(None, "--user-id"),
    agent_id: str | None = typer.Option(None, "--agent-id"),
    run_id: str | None = typer.Option(None, "--run-id"),
    filters: str | None = typer.Option(None, "--filters", help="mem0 filters as JSON."),
    top_k: int = typer.Option(10, "--top-k", "-k"),
    threshold: float = typer.Option(0.1, "--threshold"),
    mode: str | None = typer.Option(
        None, "--search", help="hybrid, vector or keyword (default: MEMVAULT_SEARCH)."),
    as_json: bool = JsonOption,
    url: str | None = UrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Find the memories that best match QUERY (meaning and keywords)."""
    import json

    from memvault.errors import InvalidInput
    from memvault.memory import Memory

    try:
        parsed = json.loads(filters) if filters else None
    except ValueError as exc:
        raise InvalidInput(f"--filters is not valid JSON: {exc}") from None
    with open_backend(ctx, url, api_key) as memory:
        if isinstance(memory, Memory):  # a local store: an index build it waits for draws a bar
            from memvault.cli.index_progress import IndexBuildBar

            memory.store.show_index_builds(IndexBuildBar())
        result = memory.search(query, user_id=user_id, agent_id=agent_id, run_id=run_id,
                               filters=parsed, top_k=top_k, threshold=threshold,
                               search_mode=mode)
    if as_json:
        print_json(result)
    else:
        print_table(None, ["score", "memory", "id"],
                    [[f"{r['score']:.3f}", r["memory"], r["id"]] for r in result["results"]])


@app.command()
def status(ctx: typer.Context, as_json: bool = JsonOption, url: str | None = UrlOption,
           api_key: str | None = ApiKeyOption) -> None:
    """Store identity, counts per namespace, embedders. Exit 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN."""
    from memvault.cli.status import collect_status, render_status

    try:
        report = remote_status(url, api_key) if url else collect_status(overrides(ctx))
    except Exception as exc:  # the status command itself broke: Nagios UNKNOWN
        print_error(f"status could not be determined: {type(exc).__name__}: {exc}")
        raise typer.Exit(3) from None
    if as_json:
        print_json(report)
    else:
        render_status(report)
    raise typer.Exit(report["exit_code"])


@app.command()
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="MEMVAULT_HOST"),
    port: int | None = typer.Option(None, "--port", help="MEMVAULT_PORT"),
) -> None:
    """Run the API server with the guard and scheduled jobs."""
    try:
        from memvault.server import run_server
    except ImportError:
        print_error("the HTTP server is not part of this version yet")
        raise typer.Exit(1) from None
    try:
        run_server(overrides(ctx, host=host, port=port))
    except MemvaultError as exc:
        print_error(exc.message, exc.hint)
        raise typer.Exit(1) from None


app.command("restore")(fails_with_exit(1)(restore))
app.command("reembed")(fails_with_exit(1)(reembed))
app.command("export")(fails_with_exit(1)(export))
app.command("drill")(fails_with_exit(1)(drill))
app.command("adopt")(fails_with_exit(1)(adopt))
app.command("doctor")(doctor)
app.command("preflight")(preflight)
app.command("mcp")(fails_with_exit(1)(mcp))


def main() -> None:
    app()
