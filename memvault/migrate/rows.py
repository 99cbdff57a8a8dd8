"""One row of a migration source, and its conversion into a checked MemoryRecord.

mem0 keeps a memory as `(id UUID, vector, payload JSONB)`; the payload holds the text under
`data`, mem0's own fields, and the caller's metadata flattened at the top level. Every source
(pgvector table, pg_dump file, REST server, memvault export) yields `SourceRow`s; `convert`
either returns the record memvault stores or raises `Rejected` with the reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from memvault.errors import InvalidInput, MemvaultError
from memvault.memory import validation as check
from memvault.store import MemoryRecord

# Payload keys that are mem0's own fields; every other top-level key is caller metadata.
MEM0_RESERVED = frozenset({
    "data", "hash", "created_at", "updated_at", "user_id", "agent_id", "run_id", "actor_id",
    "role", "text_lemmatized", "expiration_date", "memory_type",
})
_FIELDS = ("hash", "created_at", "updated_at", "user_id", "agent_id", "run_id", "actor_id",
           "role", "expiration_date", "memory_type")


class MigrationError(MemvaultError):
    code = "migration_failed"


class Rejected(Exception):
    """A source row that cannot be imported; `reason` says why (shown to the user)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class SourceRow:
    position: int  # 1-based order in the source, for messages
    id: Any
    text: Any
    fields: dict[str, Any] = field(default_factory=dict)
    metadata: Any = None
    vector: np.ndarray | None = None
    dims: int | None = None
    problem: str | None = None  # the reader could not decode this row

    @classmethod
    def from_payload(cls, position: int, row_id: Any, payload: Any,
                     vector: np.ndarray | None = None, dims: int | None = None) -> SourceRow:
        """A row of mem0's table: fields and flattened metadata separated."""
        if not isinstance(payload, dict):
            return cls(position, row_id, None, vector=vector, dims=dims,
                       problem=f"payload is not a JSON object ({type(payload).__name__})")
        meta = {k: v for k, v in payload.items() if k not in MEM0_RESERVED}
        return cls(position, row_id, payload.get("data"),
                   {k: payload[k] for k in _FIELDS if k in payload}, meta or None, vector, dims)


def parse_time(value: Any, name: str) -> tuple[str | None, bool]:
    """(ISO-8601 UTC with microseconds, was_naive) for a timestamp; None when absent."""
    if value is None or value == "":
        return None, False
    if not isinstance(value, str):
        raise Rejected("bad timestamp", f"{name} must be an ISO-8601 string, got "
                       f"{type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Rejected("bad timestamp", f"{name} {value[:40]!r} is not ISO-8601") from None
    naive = parsed.tzinfo is None
    if naive:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="microseconds"), naive


def _optional_str(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"bad {name}", f"{name} must be a string, got {type(value).__name__}")
    return value


def convert(row: SourceRow, now: str, notes: list[str]) -> MemoryRecord:
    """The record memvault stores for a source row; raises Rejected with the reason.

    Non-fatal findings (a naive timestamp read as UTC, a missing created_at, a stale mem0 hash)
    are appended to `notes`."""
    if row.problem:
        raise Rejected("unreadable row", row.problem)
    try:
        memory_id = check.check_memory_id(str(row.id) if row.id is not None else None)
    except InvalidInput:
        raise Rejected("invalid id", f"id {str(row.id)[:60]!r} is not a UUID") from None
    try:
        text = check.check_text(row.text, "text (payload 'data')")
    except InvalidInput as exc:
        kind = "empty text" if isinstance(row.text, str) or row.text is None else "invalid text"
        if row.text is None:
            raise Rejected("no text", "no text (payload has no 'data')") from None
        raise Rejected(kind, exc.message) from None
    fields = row.fields
    try:
        entities = check.check_entities(fields.get("user_id"), fields.get("agent_id"),
                                        fields.get("run_id"))
        metadata = check.check_metadata(row.metadata)
        expires = check.check_expiration(fields.get("expiration_date"))
    except InvalidInput as exc:
        kind = ("no namespace" if "at least one of" in exc.message else
                "bad metadata" if exc.message.startswith("metadata") else
                "bad expiration_date" if "expiration_date" in exc.message else "bad entity id")
        raise Rejected(kind, exc.message) from None
    created, naive_c = parse_time(fields.get("created_at"), "created_at")
    updated, naive_u = parse_time(fields.get("updated_at"), "updated_at")
    if naive_c or naive_u:
        notes.append("timestamp without offset read as UTC")
    if created is None:
        notes.append("no created_at: the import time is used")
        created = updated or now
    digest = hashlib.md5(text.encode("utf-8")).hexdigest()
    stored_hash = fields.get("hash")
    if stored_hash is not None and stored_hash != digest:
        notes.append("mem0 hash did not match the text: recomputed")
    return MemoryRecord(
        id=memory_id, memory=text, hash=digest, created_at=created,
        updated_at=updated or created, metadata=metadata,
        user_id=entities.get("user_id"), agent_id=entities.get("agent_id"),
        run_id=entities.get("run_id"), actor_id=_optional_str(fields, "actor_id"),
        role=_optional_str(fields, "role"), expiration_date=expires,
        memory_type=_optional_str(fields, "memory_type"),
    )
