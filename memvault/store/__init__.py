"""Storage: the Store contract and its backends (SQLite embedded default, PostgreSQL)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memvault.store.base import SCHEMA_VERSION, AddOutcome, Store
from memvault.store.filters import Node, evaluate, parse_filters
from memvault.store.records import (
    ENTITY_KEYS,
    JournalEntry,
    MemoryRecord,
    MetaKey,
    StoreMeta,
    namespace_key,
    text_hash,
    utc_now,
)

if TYPE_CHECKING:
    from memvault.config import Settings


def open_store(settings: Settings) -> Store:
    """Open (creating and migrating if needed) the store named by MEMVAULT_DATABASE_URL."""
    url = settings.database_url or ""
    if url.startswith("sqlite:///"):
        from memvault.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), timeout=settings.db_timeout,
                           ann_threshold=settings.ann_threshold)
    from memvault.store.postgres import PostgresStore

    return PostgresStore(url, timeout=settings.db_timeout, ef_search=settings.pg_ef_search)


__all__ = [
    "ENTITY_KEYS",
    "SCHEMA_VERSION",
    "AddOutcome",
    "JournalEntry",
    "MemoryRecord",
    "MetaKey",
    "Node",
    "Store",
    "StoreMeta",
    "evaluate",
    "namespace_key",
    "open_store",
    "parse_filters",
    "text_hash",
    "utc_now",
]
