"""Refusing a file that is not a SQLite database, without opening it from Python.

Closing any descriptor of a file drops every POSIX (fcntl) lock this process holds on it,
including the locks SQLite's open connections rely on: another process then believes it has
the last connection, checkpoints and deletes the WAL and shared-memory files under this
process's connections, whose later commits go to the deleted WAL, invisible to every other
process. So the file is probed through SQLite, whose VFS keeps a descriptor open while a
connection of the process still locks the file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from memvault.errors import SchemaError


def refuse_non_sqlite(path: Path) -> None:
    """SchemaError if `path` is a file SQLite cannot read as a database; other failures (a
    locked or unreadable file) are left to the real connection to report."""
    if not path.is_file():
        return
    probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        probe.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
            raise SchemaError(
                f"{path} is not a SQLite database",
                hint="point MEMVAULT_DATABASE_URL at a memvault store or at a new file path",
            ) from None
    finally:
        probe.close()
