"""The embedded default store: one SQLite file in WAL mode, exact search in memory.

`store.py` is the store, `schema.py` its migrations, `rows.py` the row codec, `snapshot.py`
the consistent read that backups take."""

from memvault.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
