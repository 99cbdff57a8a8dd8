"""Small builders shared by tests (records, identities, vectors)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from memvault.embed.base import EmbedderIdentity, normalize_rows
from memvault.store import MemoryRecord, Store, utc_now

DIMS = 8


def identity(name: str = "test", dims: int = DIMS) -> EmbedderIdentity:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    return EmbedderIdentity("test", name, dims, normalize_rows(rng.standard_normal((4, dims))))


def record(text: str, **fields: Any) -> MemoryRecord:
    now = fields.pop("created_at", None) or utc_now()
    fields.setdefault("user_id", "alice")
    return MemoryRecord(
        id=fields.pop("id", None) or str(uuid.uuid4()),
        memory=text,
        hash=hashlib.md5(text.encode()).hexdigest(),
        created_at=now,
        updated_at=fields.pop("updated_at", None) or now,
        **fields,
    )


def vectors(n: int, dims: int = DIMS, seed: int = 0) -> np.ndarray:
    return normalize_rows(np.random.default_rng(seed).standard_normal((n, dims)))


def prepared(store: Store, ident: EmbedderIdentity | None = None) -> EmbedderIdentity:
    ident = ident or identity()
    store.register_embedder(ident)
    store.set_active_embedder(ident.key)
    return ident


def backup_folder(destination: str | Path, backup_id: str) -> Path:
    """The local folder holding backup `backup_id` (wherever the layout puts it)."""
    from memvault.backup.catalog import list_backups
    from memvault.backup.destinations import LocalDestination

    root = Path(destination)
    entry = next(e for e in list_backups(LocalDestination(root)) if e.id == backup_id)
    return root / entry.folder


def keyword_postings(url: str) -> tuple[list[tuple[str, str, int, int]],
                                        list[tuple[str, str, int, int]]]:
    """PostgreSQL: (the keyword postings table, the postings the memories rows call for),
    each sorted (stem, memory id, count, length)."""
    from collections import Counter

    import psycopg

    with psycopg.connect(url) as conn:
        table = conn.execute("SELECT stem, memory_id, tf, length FROM memvault.keyword_postings "
                             "ORDER BY 1, 2").fetchall()
        rows = conn.execute("SELECT id, keywords FROM memvault.memories").fetchall()
    wanted = sorted((stem, memory_id, n, len(keywords.split()))
                    for memory_id, keywords in rows if keywords
                    for stem, n in Counter(keywords.split()).items())
    return table, wanted
