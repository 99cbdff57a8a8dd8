"""The store contract every backend implements (SQLite, PostgreSQL).

Every mutation writes the memory rows and their journal entries in one transaction, so the
journal is a complete, ordered account of the store: it serves `history`, feeds the in-memory
index of other processes and is what backups ship for point-in-time recovery.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memvault.embed.base import EmbedderIdentity
from memvault.progress import Progress
from memvault.store.filters import Node
from memvault.store.records import (
    ENTITY_KEYS,
    ENTITY_TYPES,
    JournalEntry,
    MemoryRecord,
    StoreMeta,
    namespace_key,
)


def entity_summaries(read: Callable[[str], list[tuple[Any, ...]]]) -> list[dict[str, Any]]:
    """Every user, agent and run with its memory count and first/last times (mem0's entity
    listing), from a backend's read of plain SQL both dialects accept."""
    result = []
    for column in ENTITY_KEYS:
        rows = read(
            f"SELECT {column}, count(*), min(created_at), max(updated_at) FROM memories "
            f"WHERE {column} IS NOT NULL GROUP BY {column} ORDER BY {column}")
        result.extend(
            {"id": value, "type": ENTITY_TYPES[column], "total_memories": int(count),
             "created_at": created, "updated_at": updated}
            for value, count, created, updated in rows
        )
    return result


# 5: PostgreSQL keeps each vector's user/agent/run and binary code beside it (postgres/scope.py).
# 4: PostgreSQL's keyword postings, kept by triggers, replace its GIN index (postgres/postings.py).
# 3: a keyword (full-text) index over each memory's normalized tokens (store/keywords.py).
# 2: namespace keys escape '%' and '/' inside ids (rows of version 1 stores are re-keyed).
SCHEMA_VERSION = 5


def legacy_key_condition(position: str) -> str:
    """SQL selecting the rows whose version 1 namespace key may differ from the current one
    (an id holding '%' or '/'); `position` is the backend's substring function."""
    return " OR ".join(f"{position}({column}, '{char}') > 0"
                       for column in ENTITY_KEYS for char in ("/", "%"))


def rekeyed_namespaces(
    rows: Iterable[tuple[str, str | None, str | None, str | None, str]],
) -> list[tuple[str, str]]:
    """(new namespace, id) for each (id, user_id, agent_id, run_id, namespace) row whose stored
    key is not the current encoding's."""
    changes = []
    for memory_id, user_id, agent_id, run_id, stored in rows:
        key = namespace_key(user_id, agent_id, run_id)
        if key != stored:
            changes.append((key, memory_id))
    return changes


def merge_update(
    current: MemoryRecord, record: MemoryRecord, fields: Collection[str] | None,
    vector: np.ndarray | None,
) -> MemoryRecord:
    """The row an update writes: `record` whole, or `current` (read under the write lock) with
    only `fields` taken from `record`. A new text needs its vector: the text and the vector of
    a memory always change together."""
    from memvault.errors import StoreError

    merged = record if fields is None else current.evolve(
        **{name: getattr(record, name) for name in fields})
    if vector is None and merged.memory != current.memory:
        raise StoreError(f"update of {record.id} changes its text without a new vector")
    return merged


def check_schema_version(version: int, tables: set[str], where: str, foreign_hint: str) -> None:
    """Refuse a store written by a newer memvault, or a place that holds something else.

    `where` names the database for the message; `version` 0 with tables present means the
    tables are not ours (never migrate over them)."""
    from memvault.errors import SchemaError

    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{where} has schema version {version}, newer than this memvault understands "
            f"({SCHEMA_VERSION})",
            hint="upgrade memvault; never open a store with an older version",
        )
    if version == 0 and tables:
        raise SchemaError(
            f"{where} holds tables but is not a memvault store "
            f"(tables: {', '.join(sorted(tables)[:5])})",
            hint=foreign_hint,
        )


@dataclass(frozen=True)
class AddOutcome:
    """The result of adding one record: the id that holds the text and whether it is new."""

    id: str
    created: bool
    entry: JournalEntry | None


@dataclass(frozen=True)
class AddPlan:
    """What one add writes: an outcome per record, an ADD entry (seqs from the store's next)
    per new one, and the new ones' positions in the batch."""

    outcomes: list[AddOutcome]
    entries: list[JournalEntry]
    rows: list[int]


def plan_adds(records: list[MemoryRecord], existing: dict[tuple[str, str], str],
              first_seq: int, actor: str | None) -> AddPlan:
    """The one dedup rule of `add` on every backend: a text already in its namespace (in the
    store, `existing`: (namespace, hash) -> id, or earlier in this batch) is not stored again;
    its outcome names the id that holds it."""
    held = dict(existing)
    outcomes: list[AddOutcome] = []
    entries: list[JournalEntry] = []
    rows: list[int] = []
    for row, record in enumerate(records):
        slot = (record.namespace, record.hash)
        if slot in held:
            outcomes.append(AddOutcome(held[slot], False, None))
            continue
        held[slot] = record.id
        entry = JournalEntry(first_seq + len(entries), "ADD", record.id, record.created_at,
                             actor, None, record.to_dict())
        entries.append(entry)
        rows.append(row)
        outcomes.append(AddOutcome(record.id, True, entry))
    return AddPlan(outcomes, entries, rows)


def check_bulk_vectors(
    records: list[MemoryRecord], vectors: dict[str, np.ndarray], registered: set[str]
) -> None:
    """bulk_load's preconditions, the same on every backend: one row per record for each
    embedder, and only embedders the store knows (a clear error instead of a key violation)."""
    from memvault.errors import StoreError

    for key, matrix in vectors.items():
        if key not in registered:
            raise StoreError(f"embedder {key} is not registered in this store")
        if len(matrix) != len(records):
            raise StoreError(f"{len(records)} records but {len(matrix)} vectors for {key}")


class StoreSnapshot(Protocol):
    """A consistent read view of the whole store at one journal seq (writes go on meanwhile)."""

    seq: int

    def counts(self) -> dict[str, int]: ...

    def vector_counts(self) -> dict[str, int]: ...

    def iter_records(self, batch_size: int = 5000) -> Iterator[list[MemoryRecord]]: ...

    def iter_vectors(
        self, embedder_key: str, batch_size: int = 5000
    ) -> Iterator[tuple[list[str], np.ndarray]]: ...

    def journal(self, after_seq: int = 0) -> Iterator[JournalEntry]: ...


class Store(ABC):
    backend: str
    # The database file of an embedded store (SQLite), which one writer process holds a lock
    # on; None for a server database (PostgreSQL elects a leader instead).
    path: Path | None = None

    # -- lifecycle and identity
    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def meta(self) -> StoreMeta: ...

    @abstractmethod
    def set_meta(self, key: str, value: Any) -> None:
        """Store one JSON-serialisable value in the store's metadata table."""

    @abstractmethod
    def get_meta(self, key: str) -> Any: ...

    # -- embedders
    @abstractmethod
    def register_embedder(self, identity: EmbedderIdentity) -> None:
        """Record an embedder (idempotent); vectors may only be stored under a registered key."""

    @abstractmethod
    def embedders(self) -> dict[str, EmbedderIdentity]: ...

    @abstractmethod
    def set_active_embedder(self, key: str) -> None: ...

    # -- writes
    @abstractmethod
    def add(
        self,
        records: list[MemoryRecord],
        vectors: np.ndarray,
        embedder_key: str,
        actor: str | None,
    ) -> list[AddOutcome]:
        """Insert records with their vectors; a text already in its namespace is not stored
        again (its outcome names the existing id, created=False)."""

    @abstractmethod
    def update(
        self,
        record: MemoryRecord,
        vector: np.ndarray | None,
        embedder_key: str,
        actor: str | None,
        fields: Collection[str] | None = None,
    ) -> JournalEntry:
        """Replace a record, or with `fields` only those fields of it: they are applied to the
        row as it is inside the write transaction, so concurrent updates of different fields
        (from any process or replica) all survive (see `merge_update`). A new vector replaces
        all vectors of the memory (the text changed)."""

    @abstractmethod
    def delete(self, ids: list[str], actor: str | None) -> list[JournalEntry]:
        """Delete the given memories; unknown ids are ignored (callers check first)."""

    @abstractmethod
    def put_vectors(self, ids: list[str], vectors: np.ndarray, embedder_key: str) -> None:
        """Add or replace vectors of existing memories under an embedder (re-embedding)."""

    @abstractmethod
    def bulk_load(
        self,
        records: list[MemoryRecord],
        vectors: dict[str, np.ndarray],
        *,
        journal: bool = False,
        actor: str | None = None,
    ) -> int:
        """Insert records as they are (ids and timestamps kept), with vectors per embedder key
        aligned with `records`. Restore and import use it; without `journal` no entries are
        written (the backup is their history). Returns the number inserted; a record whose id
        or (namespace, hash) exists raises InvalidInput and nothing is written."""

    @abstractmethod
    def advance_seq(self, seq: int) -> None:
        """Make the next journal seq greater than `seq` (a restored store continues its lineage's
        numbering)."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[StoreSnapshot]:
        """A consistent read view for backups, taken without blocking writers."""

    # -- large restores: optional hooks, no-ops unless a backend overrides them
    @contextmanager
    def deferring_search_index(self) -> Iterator[None]:
        """Within the block, bulk_load may leave approximate-search (ANN) indexes unbuilt, so a
        restore is searchable (exactly) sooner; build_search_indexes() builds them afterwards,
        while the store is already served. Backends without ANN indexes ignore it."""
        yield

    def show_index_builds(self, progress: Progress) -> None:
        """Make searches that need a search index build wait for it, drawn on `progress` (a
        one-shot command; otherwise such a search is answered meanwhile where it can be, or
        refused with IndexBuilding). Only SQLite's approximate index is built on demand; other
        backends ignore it."""
        return None

    def index_builds(self) -> list[dict[str, Any]]:
        """The vector index builds of this process, one report per embedder (SQLite builds its
        approximate index in the background; other backends report none)."""
        return []

    def build_search_indexes(self) -> None:
        """Build the ANN indexes a deferred bulk_load left out (no-op when there are none)."""
        return None

    def stale_scope_copies(self) -> int:
        """Vectors whose copy of their memory's user/agent/run (PostgreSQL keeps one beside
        each vector, by triggers) disagrees with the memory: a search in a small scope would
        miss those memories. Only disabled triggers can part them; 0 where a backend keeps
        no copy. Reads every vector (`memvault doctor`, not a request)."""
        return 0

    # -- reads
    @abstractmethod
    def get(self, memory_id: str) -> MemoryRecord | None: ...

    @abstractmethod
    def list(
        self, node: Node | None, limit: int | None = None, include_expired: bool = True
    ) -> list[MemoryRecord]:
        """Records matching a filter, newest first."""

    @abstractmethod
    def records(self, ids: list[str]) -> dict[str, MemoryRecord]:
        """The stored records of these ids (an unknown or deleted id is left out)."""

    def search(
        self,
        query: np.ndarray,
        embedder_key: str,
        node: Node | None,
        top_k: int,
        threshold: float | None = None,
        include_expired: bool = True,
    ) -> list[tuple[MemoryRecord, float]]:
        """Records by cosine similarity (1 - cosine distance), best first."""
        hits = self.search_ids(query, embedder_key, node, top_k, threshold, include_expired)
        found = self.records([memory_id for memory_id, _ in hits])
        return [(found[memory_id], score) for memory_id, score in hits if memory_id in found]

    @abstractmethod
    def search_ids(
        self,
        query: np.ndarray,
        embedder_key: str,
        node: Node | None,
        top_k: int,
        threshold: float | None = None,
        include_expired: bool = True,
        *,
        candidates: bool = False,
    ) -> list[tuple[str, float]]:
        """`search` as memory ids and scores: a search that ranks many candidates reads the
        rows of the few it returns only. `candidates`: the hits are fused with other evidence
        and ranked again (hybrid search), so a backend may search less exhaustively
        (PostgreSQL walks its graph half as deep)."""

    @abstractmethod
    def keyword_ids(
        self, query: str, node: Node | None, top_k: int, include_expired: bool = True,
    ) -> list[tuple[str, float]]:
        """Memory ids by BM25 over their keyword tokens (store/keywords.py) and their scores,
        best first; the query is tokenized like the memories, so no query syntax reaches the
        index. A query without a single indexable word finds nothing."""

    @abstractmethod
    def prime_keyword_statistics(self) -> None:
        """Start counting the store-wide keyword figures in the background, so the first
        keyword or hybrid search does not count them itself (a count reads every memory: 1.7 s
        at a million on PostgreSQL). A server calls it as it starts."""

    @abstractmethod
    def neighbours(self, ids: list[str], reach: int = 1
                   ) -> dict[str, tuple[str | None, str | None]]:
        """For each id, the memory created just before and just after it in its namespace
        (ordered by created_at, then id): the turns around it in a conversation; with `reach`
        n, also for the memories up to n - 1 steps from one."""

    @abstractmethod
    def history(self, memory_id: str) -> list[JournalEntry]: ...

    @abstractmethod
    def journal(self, after_seq: int = 0, limit: int = 10_000) -> list[JournalEntry]: ...

    @abstractmethod
    def last_seq(self) -> int: ...

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Memories per namespace key."""

    @abstractmethod
    def vector_counts(self) -> dict[str, int]:
        """Vectors per embedder key."""

    @abstractmethod
    def entities(self) -> list[dict[str, Any]]: ...

    def total(self) -> int:
        return sum(self.counts().values())


def chain_neighbours(memory_id: str, before: list[str], after: list[str], reach: int
                     ) -> dict[str, tuple[str | None, str | None]]:
    """The neighbour map out to `reach` steps around one memory, from the `reach` memories
    before it (nearest first) and after it in its namespace; a shorter list ends there."""
    chain = [*reversed(before), memory_id, *after]
    at = len(before)
    return {chain[j]: (chain[j - 1] if j > 0 else None,
                       chain[j + 1] if j + 1 < len(chain) else None)
            for j in range(max(0, at - reach + 1), min(len(chain), at + reach))}
