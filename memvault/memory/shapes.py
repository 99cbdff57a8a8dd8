"""Memories and their history in mem0's response shapes (REST, the platform API, MCP and the
console answer with these)."""

from __future__ import annotations

import uuid
from typing import Any

from memvault.store.records import ENTITY_KEYS, JournalEntry, MemoryRecord


def format_record(record: MemoryRecord, score: float | None = None, *, with_score: bool = False
                  ) -> dict[str, Any]:
    """A record in mem0's response shape (optional keys only when set)."""
    item: dict[str, Any] = {
        "id": record.id,
        "memory": record.memory,
        "hash": record.hash,
        "metadata": record.metadata,
    }
    if with_score:
        item["score"] = score
    item["created_at"] = record.created_at
    item["updated_at"] = record.updated_at
    for key in (*ENTITY_KEYS, "actor_id", "role", "expiration_date", "memory_type"):
        value = getattr(record, key)
        if value is not None:
            item[key] = value
    return item


def format_history(entry: JournalEntry) -> dict[str, Any]:
    before, after = entry.before or {}, entry.after or {}
    current = after or before
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"memvault:{entry.memory_id}:{entry.seq}")),
        "memory_id": entry.memory_id,
        "old_memory": before.get("memory"),
        "new_memory": after.get("memory"),
        "event": entry.op,
        "created_at": current.get("created_at"),
        # ADD: the memory's own updated_at (= its created_at), as mem0 2.x fills it.
        "updated_at": entry.ts if entry.op != "ADD" else after.get("updated_at", entry.ts),
        "is_deleted": entry.op == "DELETE",
        "actor_id": current.get("actor_id"),
        "role": current.get("role"),
    }
