"""Change capture: what changed in mem0's table since the last look, applied to the mirror.

mem0 keeps no change journal. The watcher keeps a *mirror*: a memvault SQLite store in its
data dir holding every mem0 row as a record (watch/payload.py) with its vector. Each interval
it compares mem0's (id, xmin) pairs with the ones it last saw (skipped at the cost of one row
when the table's fingerprint did not move), reads the payloads of the rows that are new or
whose version moved, then the vectors of those that differ, and applies the differences
through the mirror's ordinary writes: every add, update and delete becomes a journal entry
with a seq, which the backup scheduler ships like memvault's own. A version that moved without
a change of payload (a dump put back, VACUUM FULL) writes nothing. So the recovery point of a
watched mem0 is one capture interval plus one journal interval.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memvault.watch.payload import mem0_identity, record_of

if TYPE_CHECKING:
    from memvault.store import MemoryRecord, Store
    from memvault.watch.table import WatchedTable

log = logging.getLogger("memvault.watch")
ACTOR = "mem0-watch"
BATCH = 2000


@dataclass
class Capture:
    """One pass: what mem0 held that the mirror did not (and the reverse)."""

    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0  # rows whose version moved with the same payload
    skipped: list[str] = field(default_factory=list)  # rows that could not be kept, with why
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def changes(self) -> int:
        return self.added + self.updated + self.deleted

    def to_json(self) -> dict[str, object]:
        return {"added": self.added, "updated": self.updated, "deleted": self.deleted,
                "unchanged": self.unchanged, "skipped": self.skipped[:20],
                "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3)}


def diff(seen: dict[str, str], now: dict[str, str]) -> tuple[list[str], list[str]]:
    """(ids new or with a new version, ids gone) between two id -> version maps."""
    moved = [i for i, v in now.items() if seen.get(i) != v]
    gone = [i for i in seen if i not in now]
    return moved, gone


class Mirror:
    """The mirror store and the versions it was last brought up to (in memory: the first pass
    after a start compares every payload once and writes only what differs)."""

    def __init__(self, store: Store, collection: str, versions_file: Path | None = None
                 ) -> None:
        self.store = store
        self.collection = collection
        self.versions: dict[str, str] | None = None
        # The versions as of the last clean stop: a restart compares only what moved since.
        # Removed once read, so that after a crash (the mirror may be ahead of the file) every
        # row is compared again.
        self.versions_file = versions_file
        if versions_file is not None and versions_file.is_file():
            try:
                self.versions = json.loads(versions_file.read_text())
                versions_file.unlink()
            except (OSError, ValueError) as exc:
                self.versions = None
                log.warning("cannot read %s (every row is compared once): %s", versions_file,
                            exc)

    def save_versions(self) -> None:
        if self.versions_file is None or self.versions is None:
            return
        partial = self.versions_file.with_suffix(".partial")
        try:
            partial.write_text(json.dumps(self.versions))
            partial.replace(self.versions_file)
        except OSError as exc:
            log.warning("cannot write %s (the next start compares every row): %s",
                        self.versions_file, exc)

    def embedder_key(self, dims: int) -> str:
        identity = mem0_identity(self.collection, dims)
        if identity.key not in self.store.embedders():
            self.store.register_embedder(identity)
        if self.store.meta().active_embedder != identity.key:
            self.store.set_active_embedder(identity.key)
        return identity.key

    def capture(self, table: WatchedTable, dims: int, *, revector: bool = False) -> Capture:
        """Bring the mirror up to mem0's table. `revector`: the column's dimension changed
        (accepted by a restore into mem0): every vector is read anew."""
        started, cpu = time.perf_counter(), time.process_time()
        result = Capture()
        versions = table.versions()
        if self.versions is None or revector:
            known = {r.id for r in self.store.list(None)}
            moved, gone = list(versions), [i for i in known if i not in versions]
        else:
            moved, gone = diff(self.versions, versions)
        key = self.embedder_key(dims)
        first_load = self.store.total() == 0 and self.store.last_seq() == 0
        for start in range(0, len(moved), BATCH):
            self._batch(table, moved[start:start + BATCH], dims, key, result,
                        first_load=first_load, revector=revector)
        present = [i for i in gone if self.store.get(i) is not None]
        for start in range(0, len(present), BATCH):
            result.deleted += len(self.store.delete(present[start:start + BATCH], ACTOR))
        self.versions = versions
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu
        if result.changes or result.skipped:
            log.info("captured from mem0: %s", result.to_json())
        return result

    def _batch(self, table: WatchedTable, ids: list[str], dims: int, key: str,
               result: Capture, *, first_load: bool, revector: bool) -> None:
        changed: list[tuple[MemoryRecord, MemoryRecord | None]] = []
        vectors: dict[str, np.ndarray | None] = {}
        for row in table.rows(ids, vectors=first_load):
            if not isinstance(row.payload, dict):
                result.skipped.append(f"{row.id}: payload is {type(row.payload).__name__}, "
                                      "not a JSON object")
                continue
            record = record_of(row.id, row.payload)
            current = None if first_load else self.store.get(row.id)
            if current is None or current != record or revector:
                changed.append((record, current))
                vectors[row.id] = row.vector
            else:
                result.unchanged += 1
        if not changed:
            return
        if not first_load:  # the vectors of the rows that differ, and only those
            vectors = {r.id: r.vector for r in table.rows([c.id for c, _ in changed])}
        fresh: list[tuple[MemoryRecord, np.ndarray]] = []
        for record, current in changed:
            if record.id not in vectors:
                continue  # deleted meanwhile: the next pass sees it gone
            vector = vectors[record.id]
            if vector is None:
                vector = np.zeros(dims, dtype=np.float32)  # mem0 never writes a NULL vector
            if len(vector) != dims:
                result.skipped.append(f"{record.id}: vector of {len(vector)} dims in a "
                                      f"vector({dims}) column")
                continue
            if current is None:
                fresh.append((record, vector))
            elif current == record:
                self.store.put_vectors([record.id], vector[None, :], key)
                result.unchanged += 1
            else:
                self.store.update(record, vector, key, ACTOR)
                result.updated += 1
        if fresh:
            records = [r for r, _ in fresh]
            matrix = np.stack([v for _, v in fresh]).astype(np.float32)
            if first_load:
                # The first look at a store: loaded as it is; the first snapshot holds it.
                result.added += self.store.bulk_load(records, {key: matrix})
            else:
                outcomes = self.store.add(records, matrix, key, ACTOR)
                result.added += sum(1 for o in outcomes if o.created)
