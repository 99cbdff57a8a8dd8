"""Plain records that cross the store boundary: a memory, a journal entry, the store's metadata."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ENTITY_KEYS = ("user_id", "agent_id", "run_id")
ENTITY_TYPES = {"user_id": "user", "agent_id": "agent", "run_id": "run"}


def text_hash(text: str) -> str:
    """A memory's `hash`: md5 of its text, as mem0 computes it (dedup within a namespace)."""
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def utc_now() -> str:
    """ISO-8601 with offset, UTC, microseconds: 2026-08-22T10:01:02.123456+00:00."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _escape_id(value: str) -> str:
    # Percent-escape only the escape character and the separator: ids without either keep the
    # key they always had, and no id can spell a separator, so the key is injective.
    return value.replace("%", "%25").replace("/", "%2F")


def namespace_key(user_id: str | None, agent_id: str | None, run_id: str | None) -> str:
    """One string per (user, agent, run) combination, e.g. 'user:alice/agent:bot'; distinct
    triples always give distinct keys ('%' and '/' inside an id are written %25 and %2F)."""
    parts = [
        f"{ENTITY_TYPES[name]}:{_escape_id(value)}"
        for name, value in zip(ENTITY_KEYS, (user_id, agent_id, run_id), strict=True)
        if value is not None
    ]
    return "/".join(parts)


def legacy_namespace_key(user_id: str | None, agent_id: str | None, run_id: str | None) -> str:
    """The key of schema version 1 stores and backup format version 1 (ids joined unescaped,
    so an id holding '/' could collide with another triple). For reading old data only."""
    parts = [
        f"{ENTITY_TYPES[name]}:{value}"
        for name, value in zip(ENTITY_KEYS, (user_id, agent_id, run_id), strict=True)
        if value is not None
    ]
    return "/".join(parts)


@dataclass(frozen=True)
class MemoryRecord:
    id: str
    memory: str
    hash: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any] | None = None
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    actor_id: str | None = None
    role: str | None = None
    expiration_date: str | None = None
    memory_type: str | None = None

    @property
    def namespace(self) -> str:
        return namespace_key(self.user_id, self.agent_id, self.run_id)

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose (dataclasses.asdict deep-copies and dominated bulk ingest).
        return {name: getattr(self, name) for name in _RECORD_FIELDS}

    def evolve(self, **changes: Any) -> MemoryRecord:
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryRecord:
        known = {name: data.get(name) for name in cls.__dataclass_fields__}
        return cls(**known)


_RECORD_FIELDS = tuple(MemoryRecord.__dataclass_fields__)


@dataclass(frozen=True)
class JournalEntry:
    """One mutation. `before`/`after` are full MemoryRecord dicts (None on add/delete)."""

    seq: int
    op: str  # ADD | UPDATE | DELETE
    memory_id: str
    ts: str
    actor: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Any) -> JournalEntry:
        seq, op, memory_id, before, after, ts, actor = row
        return cls(
            seq=int(seq),
            op=op,
            memory_id=str(memory_id),
            ts=ts if isinstance(ts, str) else ts.isoformat(),
            actor=actor,
            before=_load_json(before),
            after=_load_json(after),
        )


def _load_json(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value
    return json.loads(value)


class MetaKey(StrEnum):
    """The keys of the store's `meta` table (one JSON value each), beside the data they
    describe so that a backup or restore can never leave them behind."""

    STORE_ID = "store_id"
    LINEAGE_ID = "lineage_id"
    CREATED_AT = "created_at"
    SCHEMA_VERSION = "schema_version"
    ACTIVE_EMBEDDER = "active_embedder"
    # Set while a restore loads and cleared when it finishes: a store left half-restored
    # (kill -9) is refused until the restore is run again.
    RESTORE_INCOMPLETE = "restore_incomplete"
    RESTORED_FROM = "restored_from"  # the backup the last finished restore came from
    LAST_IMPORT = "last_import"
    API_KEYS = "api_keys"
    # mem0's vector_store collection_name this store was first opened under (Memory.from_config):
    # a config naming another collection is refused instead of sharing this store.
    COLLECTION_NAME = "collection_name"


# The keys StoreMeta has fields for; every other key goes to `extra`.
_IDENTITY_KEYS = frozenset({MetaKey.STORE_ID, MetaKey.LINEAGE_ID, MetaKey.CREATED_AT,
                            MetaKey.SCHEMA_VERSION, MetaKey.ACTIVE_EMBEDDER})


@dataclass
class StoreMeta:
    store_id: str
    lineage_id: str
    created_at: str
    schema_version: int
    backend: str
    location: str
    active_embedder: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: dict[str, Any], *, backend: str, location: str) -> StoreMeta:
        """The meta table's key -> value pairs as one record (every backend reads it so)."""
        return cls(
            store_id=values[MetaKey.STORE_ID],
            lineage_id=values[MetaKey.LINEAGE_ID],
            created_at=values[MetaKey.CREATED_AT],
            schema_version=values[MetaKey.SCHEMA_VERSION],
            backend=backend,
            location=location,
            active_embedder=values.get(MetaKey.ACTIVE_EMBEDDER),
            extra={k: v for k, v in values.items() if k not in _IDENTITY_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
