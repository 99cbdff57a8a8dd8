"""Connections whose every wait is bounded, and what a URL points at (never its password)."""

from __future__ import annotations

import logging
import math
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from memvault.config import redact_url
from memvault.errors import InvalidInput, SchemaError, StoreError, StoreUnavailable

log = logging.getLogger("memvault.store.postgres")


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
        # psycopg's own timeout signal of Connection.wait; no public name exists for it.
        except psycopg.errors._WaitTimeout:  # noqa: SLF001
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

    def unavailable(self, exc: BaseException, doing: str) -> StoreUnavailable:
        """The error (with a hint) for a server that cannot be reached, logged with its cause."""
        cause = self.scrub(str(exc).strip() or type(exc).__name__)
        log.warning("PostgreSQL unavailable while %s (%s): %s", doing, self.describe(),
                    cause)
        lowered = cause.lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            hint = "check the user name and password in MEMVAULT_DATABASE_URL"
        elif "does not exist" in lowered and "database" in lowered:
            hint = (f"create the database (createdb {self.database}) or fix its name "
                    "in MEMVAULT_DATABASE_URL")
        else:
            hint = "check that PostgreSQL is running and reachable; memvault retries on its own"
        return StoreUnavailable(
            f"PostgreSQL at {self.describe()} ({self.url}) is unavailable while "
            f"{doing}: {cause}",
            hint=hint,
        )


def check_pooled(conn: psycopg.Connection[Any]) -> None:
    """Before a pooled connection is handed out: a server that closed it (a restart, a
    terminated backend) has left something to read on its socket, and only then is the
    connection pinged (raising if it is dead, so the pool replaces it). A ping on every
    checkout cost a round trip each, six per hybrid search."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    # poll, not select: a server holding many files has sockets numbered past select's 1024
    waiting = select.poll()
    waiting.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if waiting.poll(0):
        ConnectionPool.check_connection(conn)


def connect_kwargs(timeout: float) -> dict[str, Any]:
    """libpq settings that bound connecting and notice a dead peer within `timeout`."""
    return {
        "autocommit": True,
        "connect_timeout": max(2, math.ceil(timeout)),
        "application_name": "memvault",
        # TCP only (ignored on unix sockets): notice a dead peer within the timeout.
        "keepalives": 1,
        "keepalives_idle": max(1, int(timeout)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout * 1000),
    }


@contextmanager
def driver_errors(target: PostgresTarget, doing: str) -> Iterator[None]:
    """Driver errors become memvault errors: bad data a 4xx, a lost server StoreUnavailable."""
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        raise SchemaError(
            f"the memvault tables are gone from database {target.database} "
            f"({target.describe()}): {exc}",
            hint="the database was dropped, replaced or restored behind this process; "
                 "restart memvault (the guard checks the store's identity on start)",
        ) from None
    except psycopg.errors.IntegrityError as exc:
        raise InvalidInput(f"the write conflicts with stored data: {exc}") from None
    except (psycopg.errors.DataError, psycopg.errors.UntranslatableCharacter) as exc:
        raise InvalidInput(f"PostgreSQL rejected the data: {exc}") from None
    except psycopg.errors.QueryCanceled as exc:
        raise target.unavailable(exc, doing) from None
    except psycopg.OperationalError as exc:
        raise target.unavailable(exc, doing) from None
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL error at {target.describe()}: {exc}") from None
