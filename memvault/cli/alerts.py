"""`memvault alerts test`: prove that every configured alert URL reaches a person."""

from __future__ import annotations

import dataclasses
import socket

import typer

from memvault.cli.context import overrides
from memvault.cli.output import JsonOption, fails_with_exit, print_error, print_json, print_table

alerts_app = typer.Typer(help="Check alert delivery (MEMVAULT_ALERT_URLS).",
                         no_args_is_help=True)

EXAMPLE = ("MEMVAULT_ALERT_URLS='tgram://BOT_TOKEN/CHAT_ID,json://hooks.example.com/memvault'")


@alerts_app.command("test")
@fails_with_exit(1)
def alerts_test(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Send a test notification to every alert URL. Exit 0 if all were delivered, else 1."""
    from memvault.config import load_settings
    from memvault.errors import ConfigError
    from memvault.guard.alerts import AlertManager

    settings = load_settings(overrides(ctx))
    urls = [secret.get_secret_value() for secret in settings.alert_urls]
    if not urls:
        raise ConfigError("no alert URL is configured, so alerts reach nobody",
                          hint=f"set MEMVAULT_ALERT_URLS to comma-separated apprise URLs, e.g. "
                          f"{EXAMPLE}, then run `memvault alerts test` again")
    manager = AlertManager(urls, instance=f"memvault CLI on {socket.gethostname()}", retries=1)
    results = manager.test()
    failed = [r for r in results if not r.ok]
    if as_json:
        print_json({"ok": not failed, "results": [dataclasses.asdict(r) for r in results]})
    else:
        print_table("alert test", ["url", "result", "error"],
                    [[r.url, "delivered" if r.ok else "FAILED", r.error] for r in results])
    if failed:
        print_error(f"{len(failed)} of {len(results)} alert URLs did not take the test "
                    f"notification: {', '.join(r.url for r in failed)}",
                    "check each failing URL's host, token and credentials and that this machine "
                    "can reach the service; run `memvault -v alerts test` for apprise's log")
        raise typer.Exit(1)
