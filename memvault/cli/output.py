"""Printing for the CLI: JSON for scripts, Rich tables for people, errors on stderr."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        # fold, never cut: a path or URL shown with an ellipsis is a wrong path
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def print_error(message: str, hint: str | None = None) -> None:
    from memvault.config.redact import redact_url

    message = redact_url(message)  # a driver's or endpoint's message may quote a DSN or URL
    # soft_wrap: never break a command the user should copy in the middle
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]what to do:[/] {escape(hint)}", highlight=False, soft_wrap=True)


JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")

F = TypeVar("F", bound=Callable[..., Any])


def fails_with_exit(code: int = 1) -> Callable[[F], F]:
    """Turn a MemvaultError into a clear message on stderr and the given exit code."""
    from memvault.errors import MemvaultError

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except MemvaultError as exc:
                print_error(exc.message, exc.hint)
                raise typer.Exit(code) from None

        return wrapper  # type: ignore[return-value]

    return decorate
