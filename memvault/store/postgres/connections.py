"""Connections whose every wait is bounded, and what a URL points at (never its password)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from memvault.config import redact_url
from memvault.errors import StoreError


class TimedConnection(psycopg.Connection[Any]):
    """A connection whose every wait on the server is bounded by `deadline` seconds.

    libpq has no client-side query timeout: a server that stops answering (frozen, or a network
    path that drops packets) would hang the request forever. On expiry the connection is closed
    at once (its state is unknown) and the pool replaces it.
    """

    deadline: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return super().wait(gen, interval, timeout if timeout is not None else self.deadline)
        except psycopg.errors._WaitTimeout:
            self.close()
            raise psycopg.OperationalError(
                f"no answer from the server within {timeout or self.deadline:g}s"
            ) from None


@contextmanager
def no_deadline(conn: psycopg.Connection[Any], restore_ms: int) -> Iterator[None]:
    """Lift the client deadline and the server's statement_timeout for long admin work."""
    previous = getattr(conn, "deadline", None)
    if isinstance(conn, TimedConnection):
        conn.deadline = None
    conn.execute("SET statement_timeout = 0")
    try:
        yield
    finally:
        if not conn.closed:
            try:
                conn.execute(f"SET statement_timeout = {restore_ms}")
                if isinstance(conn, TimedConnection):
                    conn.deadline = previous
            except psycopg.Error:
                conn.close()  # the pool discards it


class PostgresTarget:
    """What a URL points at, for messages and logs (never the password)."""

    def __init__(self, url: str) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"invalid PostgreSQL URL {redact_url(url)}: {exc}") from None
        self.host = str(params.get("host") or "localhost")
        self.port = str(params.get("port") or "5432")
        self.database = str(params.get("dbname") or params.get("user") or "")
        self.user = str(params.get("user") or "")
        self.password = str(params.get("password") or "")
        self.url = self.scrub(redact_url(url))  # also a password given as ?password=

    def describe(self) -> str:
        return (f"host={self.host} port={self.port} database={self.database} "
                f"user={self.user or '(default)'}")

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text
