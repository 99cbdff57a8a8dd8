"""Rows of the SQLite `memories` table: columns, statements, and the record <-> row codec."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from memvault.store.keywords import KeywordTokenizer
from memvault.store.records import (
    MemoryRecord,
)

COLUMNS = (
    "id", "memory", "hash", "metadata", "user_id", "agent_id", "run_id", "actor_id", "role",
    "created_at", "updated_at", "expiration_date", "memory_type",
)
SELECT = "SELECT " + ", ".join(f"m.{c}" for c in COLUMNS) + " FROM memories m"


INSERT = (f"INSERT INTO memories ({', '.join((*COLUMNS[:9], 'namespace', *COLUMNS[9:]))},"
           f" keywords) VALUES ({', '.join('?' * 15)})")


def row_to_record(row: tuple[Any, ...]) -> MemoryRecord:
    data = dict(zip(COLUMNS, row, strict=True))
    data["metadata"] = json.loads(data["metadata"]) if data["metadata"] else None
    return MemoryRecord(**data)


def record_params(record: MemoryRecord, tokenizer: KeywordTokenizer) -> tuple[Any, ...]:
    """The row of a record, its index tokens last."""
    metadata = json.dumps(record.metadata, ensure_ascii=False) if record.metadata else None
    return (
        record.id, record.memory, record.hash, metadata, record.user_id, record.agent_id,
        record.run_id, record.actor_id, record.role, record.namespace, record.created_at,
        record.updated_at, record.expiration_date, record.memory_type,
        tokenizer.document(record.memory),
    )


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def match_expression(terms: list[str]) -> str:
    """An FTS5 query matching any of the stems, each a quoted string: no operator syntax."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
