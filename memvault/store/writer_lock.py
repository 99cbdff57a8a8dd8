"""One writer process per SQLite store, and noticing a store file swapped under a process.

`serve` (the process that runs the guard, snapshots and journal shipping) holds an exclusive
`flock` on `<db>.lock` for its whole life and writes its pid there; a second `serve` on the same
file exits non-zero naming the first. Short CLI commands that only write memories (`memvault
add`) need no lock (SQLite's transactions keep seqs unique, and the server ships what they
wrote); a command that ships journal or takes a snapshot on its own (`backup create`) takes the
lock for its run, so it never races a running server's shipper: it is refused, naming the
server's pid, with `POST /backups` as what to do instead. Where flock cannot be trusted (NFS,
a copied store file), the guard's WriterConflict catches two writers from what they ship.

A store file deleted or replaced while a process has it open goes unnoticed by that process's
connection (it keeps reading the old inode): `file_swap` compares the path's (st_dev, st_ino)
with the one opened, and reads the identity of whatever is at the path now through a fresh
connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from memvault.errors import MemvaultError

if TYPE_CHECKING:
    from memvault.store.base import Store


class WriterLockHeld(MemvaultError):
    code = "writer_lock_held"


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int


def file_identity(path: Path) -> FileIdentity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return FileIdentity(st.st_dev, st.st_ino)


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


class WriterLock:
    """An exclusive flock on `<db>.lock`, held until `release()` (or the process ends)."""

    def __init__(self, db_path: Path, purpose: str) -> None:
        self.path = lock_path(db_path)
        self.purpose = purpose
        self._handle: IO[str] | None = None

    def acquire(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = _holder(handle.read())
            handle.close()
            raise WriterLockHeld(
                f"the SQLite store {self.path.with_suffix('')} is held by another memvault "
                f"process: {holder} (lock file {self.path}); one store has one writer process",
                hint="stop that process first, or talk to it (`POST /backups` takes a backup "
                "through the running server); each server needs its own MEMVAULT_DATA_DIR or "
                "MEMVAULT_DATABASE_URL") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "purpose": self.purpose,
                                 "since": datetime.now(UTC).isoformat()}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()


def _holder(text: str) -> str:
    try:
        data = json.loads(text)
        return (f"pid {data['pid']} on {data['host']} ({data['purpose']}, since "
                f"{data['since']})")
    except (ValueError, TypeError, KeyError):
        return "a process that left no pid"


def sqlite_path(store: Store) -> Path | None:
    """The file of a SQLite store (None for another backend: PostgreSQL elects a leader)."""
    return store.path


def hold_writer_lock(store: Store, purpose: str) -> WriterLock | None:
    path = sqlite_path(store)
    return WriterLock(path, purpose).acquire() if path is not None else None


@dataclass(frozen=True)
class Swap:
    """What is at the store's path now, when it is not the file the process opened."""

    deleted: bool
    summary: str


def file_swap(path: Path, opened: FileIdentity | None) -> Swap | None:
    """None while `path` is still the file opened as `opened`."""
    if opened is None:
        return None
    now = file_identity(path)
    if now is None:
        return Swap(True, f"the store file {path} was deleted while this process has it open "
                    "(it still reads and writes the deleted file, which is lost at the next "
                    "restart)")
    if now == opened:
        return None
    return Swap(False, f"the store file {path} was replaced while this process has it open "
                f"(inode {opened.inode} opened, {now.inode} there now: {_identity_at(path)})")


def _identity_at(path: Path) -> str:
    """The store id and lineage of the file now at `path`, through a fresh read-only
    connection (the open one still sees the old file)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN "
                                     "('store_id', 'lineage_id')").fetchall())
        finally:
            conn.close()
        return (f"store {json.loads(rows.get('store_id', 'null'))} of lineage "
                f"{json.loads(rows.get('lineage_id', 'null'))}")
    except (sqlite3.Error, ValueError) as exc:
        return f"not a readable memvault store ({exc})"
