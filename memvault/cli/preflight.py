"""`memvault preflight`: what the next start with a candidate configuration would do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from memvault.cli.output import JsonOption, console, print_error, print_json, print_table

STATE_STYLE = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "UNKNOWN": "magenta"}


def preflight(
    ctx: typer.Context,
    env_file: Path | None = typer.Option(
        None, "--env", help="The candidate as a dotenv file (MEMVAULT_* lines, as compose "
        "reads them); other keys are ignored and listed."),
    config_file: Path | None = typer.Option(
        None, "--config", help="The candidate memvault.toml."),
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Candidate MEMVAULT_DATABASE_URL."),
    embedder: str | None = typer.Option(None, "--embedder", help="Candidate MEMVAULT_EMBEDDER."),
    embedder_url: str | None = typer.Option(None, "--embedder-url",
                                            help="Candidate MEMVAULT_EMBEDDER_URL."),
    host: str | None = typer.Option(None, "--host", help="Candidate MEMVAULT_HOST."),
    port: int | None = typer.Option(None, "--port", help="Candidate MEMVAULT_PORT."),
    as_json: bool = JsonOption,
) -> None:
    """Check a candidate configuration against the current one and the ledger; change nothing.

    The candidate is the current configuration with --config, then --env, then the flags laid
    over it. Exit 0 nothing risky, 1 review, 2 the start would refuse or lose data, 3 the
    preflight itself failed."""
    from memvault.cli.context import overrides
    from memvault.config import load_settings
    from memvault.errors import MemvaultError
    from memvault.preflight import load_candidate, run_preflight

    flags = overrides(ctx)
    try:
        current = load_settings(flags)
        candidate = load_candidate(flags, env_file=env_file, config_file=config_file, flags={
            "database_url": database_url, "embedder": embedder, "embedder_url": embedder_url,
            "host": host, "port": port})
        report = run_preflight(current, flags, candidate)
    except MemvaultError as exc:
        print_error(f"preflight could not be run: {exc.message}", exc.hint)
        raise typer.Exit(3) from None
    except Exception as exc:  # the preflight itself broke: Nagios UNKNOWN, never a false OK
        print_error(f"preflight could not be run: {type(exc).__name__}: {exc}")
        raise typer.Exit(3) from None
    if as_json:
        print_json(report)
    else:
        _print(report)
    raise typer.Exit(report["exit_code"])


def _print(report: dict[str, Any]) -> None:
    if report["differences"]:
        print_table("candidate vs current configuration",
                    ["setting", "current", "candidate", "current source", "candidate source"],
                    [[d["key"], _shown(d["current"]), _shown(d["candidate"]),
                      d["current_source"], d["candidate_source"]]
                     for d in report["differences"]])
    if report["ignored_env_keys"]:
        console.print(f"ignored (not memvault settings): {', '.join(report['ignored_env_keys'])}",
                      highlight=False)
    print_table("what the next start would do", ["check", "state", "consequence"],
                [[c["name"], f"[{STATE_STYLE[c['status']]}]{c['status']}[/]", c["message"]]
                 for c in report["checks"]])
    console.print(f"preflight: {report['status']} (exit {report['exit_code']})",
                  highlight=False)


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "-" if value is None else str(value)
