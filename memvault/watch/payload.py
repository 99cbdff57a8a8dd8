"""mem0's row (`id`, `payload` jsonb, `vector`) as a memvault MemoryRecord and back, exactly.

A watched mem0 store is kept as memvault records so that snapshots, journal shipping, verify
and restore work on it unchanged. The mapping must give back the payload mem0 wrote, key for
key and value for value (`payload_of(record_of(id, p)) == p` for every JSON object p):

- the text (`data`), the timestamps and the entity fields are lifted into the record's own
  fields when they are strings (so a backup reads like any memvault backup: `memory`,
  `user_id`, namespace, ...); every other key, and a lifted key whose value is not a string,
  stays in `metadata` as mem0 wrote it (mem0's `hash`, `text_lemmatized`, the caller's
  metadata flattened at the top level);
- `created_at` / `updated_at` are lifted only when they are ISO-8601 times with an offset
  (they stamp the mirror's journal entries); otherwise they stay in `metadata` and the record
  holds NO_TIME;
- a required field that the payload lacks (`data`, `created_at`, `updated_at`) is named in
  `metadata[ABSENT]`, a key holding U+0000, which PostgreSQL's jsonb cannot store: it can
  never collide with a key mem0 wrote;
- the record's `hash` (memvault's dedup key within a namespace) is the md5 of the mem0 id, not
  of the text: mem0 may hold one text twice in a namespace (infer=False), and the mirror must
  keep both. mem0's own `hash` stays in `metadata["hash"]`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from memvault.embed import EmbedderIdentity
from memvault.store import MemoryRecord

ABSENT = "\u0000absent"
# payload key -> MemoryRecord field, for the keys lifted when their value is a string.
LIFTED = {"data": "memory", "created_at": "created_at", "updated_at": "updated_at",
          "user_id": "user_id", "agent_id": "agent_id", "run_id": "run_id",
          "actor_id": "actor_id", "role": "role"}
REQUIRED = ("data", "created_at", "updated_at")  # record fields that cannot be None
TIMES = ("created_at", "updated_at")
# A record's times stamp its journal entries, which restore orders and compares: a payload
# time that is not an ISO-8601 time with an offset stays in metadata, the record gets this.
NO_TIME = "1970-01-01T00:00:00+00:00"


def _liftable(key: str, value: Any) -> bool:
    if type(value) is not str:
        return False
    if key not in TIMES:
        return True
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def dedup_key(memory_id: str) -> str:
    return hashlib.md5(memory_id.encode("utf-8")).hexdigest()


def record_of(memory_id: str, payload: dict[str, Any]) -> MemoryRecord:
    fields: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key, value in payload.items():
        if key in LIFTED and _liftable(key, value):
            fields[LIFTED[key]] = value
        else:
            metadata[key] = value
    absent = [key for key in REQUIRED if key not in payload]
    if absent:
        metadata[ABSENT] = absent
    for key in REQUIRED:
        fields.setdefault(LIFTED[key], NO_TIME if key in TIMES else "")
    return MemoryRecord(id=memory_id, hash=dedup_key(memory_id), metadata=metadata or None,
                        **fields)


def payload_of(record: MemoryRecord | Mapping[str, Any]) -> dict[str, Any]:
    """The payload mem0 wrote, from a record or a record's fields as a backup line holds
    them (restore reads lines without building records)."""
    fields = record if isinstance(record, Mapping) else record.to_dict()
    metadata = dict(fields.get("metadata") or {})
    absent = set(metadata.pop(ABSENT, ()) or ())
    payload = metadata
    for key, name in LIFTED.items():
        value = fields.get(name)
        if key in payload or key in absent or value is None:
            continue
        payload[key] = value
    return payload


def mem0_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """The payload to write into mem0's table for a backed-up memory: exactly mem0's for a
    watched one; for a memory of memvault's own store, mem0's shape with its `hash` (the md5
    of the text, as mem0 computes it) added."""
    payload = payload_of(row)
    digest = row.get("hash")
    if "hash" not in payload and digest and digest != dedup_key(str(row.get("id"))):
        payload["hash"] = digest
    return payload


def mem0_identity(collection: str, dims: int) -> EmbedderIdentity:
    """The identity memvault files mem0's vectors under: mem0's model is not known to the
    watcher, only the table and the column's dimension (`mem0:<table>:<dims>`). Its probe
    vectors are zeros: nothing is ever embedded under it."""
    return EmbedderIdentity(provider="mem0", model=collection.replace(":", "_"), dims=dims,
                            probes=np.zeros((1, dims), dtype=np.float32))
