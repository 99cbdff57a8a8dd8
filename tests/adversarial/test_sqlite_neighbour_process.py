"""Another process opening and closing the store (a `memvault search` next to `serve`) must not
take the WAL from under this process: what this process commits afterwards is seen by others,
and a connection it opens later (an index build) reads the same database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memvault.errors import SchemaError
from memvault.store.sqlite import SQLiteStore
from tests.helpers import identity, prepared, record, vectors

ROOT = Path(__file__).resolve().parents[2]


def count_elsewhere(db: Path) -> int:
    """Memories as a fresh process reads them, opening and closing its own connection."""
    script = (f"import sqlite3; c = sqlite3.connect({str(db)!r}); "
              "print(c.execute('SELECT count(*) FROM memories').fetchone()[0]); c.close()")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return int(done.stdout)


def test_writes_after_a_neighbour_closed_the_store_are_seen_by_others(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = SQLiteStore(db)
    ident = prepared(store, identity("neighbour", 16))
    store.add([record(f"first {i}") for i in range(10)], vectors(10, 16), ident.key, None)
    assert count_elsewhere(db) == 10  # the neighbour opened and closed the file
    assert (tmp_path / "m.db-wal").exists()  # this process's WAL is still there
    store.add([record(f"second {i}") for i in range(10)], vectors(10, 16, seed=1), ident.key,
              None)
    assert count_elsewhere(db) == 20
    store.close()


def test_a_file_that_is_not_sqlite_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not memories, but they are longer than a header" * 10)
    with pytest.raises(SchemaError, match="is not a SQLite database"):
        SQLiteStore(path)
    assert path.read_text().startswith("these are not memories")
