"""Online re-embedding: give every memory a vector from a new embedder while the store keeps
serving with its active one, then switch the store's active embedder in one step.

Why it is online, resumable and safe:
- Vectors are keyed (memory, embedder key), so the target's vectors are written next to the
  active embedder's; searches and writes with the active embedder are untouched until the
  switch, and the old vectors are never deleted (going back is a config change).
- Only memories without a target vector are embedded: their ids come from one consistent
  snapshot at seq S (held only while listing ids, never while embedding); every batch is one
  short `put_vectors` transaction. An interrupted run resumes where it stopped.
- Writes made meanwhile are in the journal after S. ADDs and text UPDATEs (an UPDATE with a new
  text replaces every vector of the memory) are re-embedded from the memory's *current* text,
  round after round. A text changed after it was read always has a later journal entry, so a
  stale target vector is always overwritten by a later round.
- The switch happens only once a snapshot shows every memory holding a target vector with no
  text change pending (or, under steady traffic, nothing missing that pending writes do not
  explain; those are caught up right after the switch). The final coverage is then verified.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from memvault.errors import EmbedderError, InvalidInput, MemvaultError, StoreError
from memvault.progress import Advance, NoProgress, Progress
from memvault.store import parse_filters
from memvault.store.records import JournalEntry, MetaKey

if TYPE_CHECKING:
    from memvault.embed import Embedder, EmbedderIdentity
    from memvault.store import Store

log = logging.getLogger("memvault.memory.reembed")

MAX_PAGE = 1000  # ids per `id in [...]` lookup (filters.MAX_IN_VALUES)
MAX_ROUNDS = 25  # catch-up rounds before giving up on writers faster than the embedder
JOURNAL_PAGE = 10_000


class ReembedError(MemvaultError):
    code = "reembed_failed"




@dataclass(frozen=True)
class Coverage:
    """How many memories hold a vector under `key`, in one consistent view at `seq`."""

    key: str
    have: int
    total: int
    seq: int

    @property
    def complete(self) -> bool:
        return self.have >= self.total

    @property
    def missing(self) -> int:
        return max(0, self.total - self.have)


def coverage(store: Store, key: str) -> Coverage:
    with store.snapshot() as snap:
        have = snap.vector_counts().get(key, 0)
        return Coverage(key, have, sum(snap.counts().values()), snap.seq)


@dataclass
class ReembedPlan:
    target: EmbedderIdentity
    active: str | None
    active_dims: int | None
    total: int
    have: int
    seq: int
    registered: bool  # an earlier run registered the target (this one resumes it)

    @property
    def to_embed(self) -> int:
        return max(0, self.total - self.have)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.describe(),
            "active": self.active,
            "dims": {"from": self.active_dims, "to": self.target.dims},
            "memories": self.total,
            "have_target_vector": self.have,
            "to_embed": self.to_embed,
            "resumes_earlier_run": self.registered and self.have > 0
            and self.active != self.target.key,
            "switch_needed": self.active != self.target.key,
            "seq": self.seq,
        }


def plan_reembed(store: Store, identity: EmbedderIdentity) -> ReembedPlan:
    """What a run would do (reads counts only; writes nothing)."""
    unfinished = store.get_meta(MetaKey.RESTORE_INCOMPLETE)
    if unfinished:
        raise ReembedError(
            f"the store holds an unfinished restore of backup {unfinished.get('backup')}; "
            "it cannot be re-embedded", hint="re-run `memvault restore` to finish it first")
    known = store.embedders()
    stored = known.get(identity.key)
    if stored is not None and not stored.same_model(identity):
        raise ReembedError(
            f"the store already holds vectors under {identity.key} from a different model "
            f"(probe similarity {stored.probe_similarity(identity):.3f}, fingerprint "
            f"{identity.fingerprint} vs {stored.fingerprint}); mixing them would corrupt "
            "search", hint="point --embedder at the model that made them, or pick another "
            "model name")
    meta = store.meta()
    active = meta.active_embedder
    cov = coverage(store, identity.key)
    return ReembedPlan(identity, active, known[active].dims if active in known else None,
                       cov.total, cov.have, cov.seq, stored is not None)


@dataclass
class ReembedReport:
    plan: ReembedPlan
    embedded: int  # vectors written for memories that lacked one
    caught_up: int  # vectors written for memories added or re-texted during the run
    rounds: int
    switched: bool
    active: str | None
    final: Coverage
    seconds: float

    @property
    def complete(self) -> bool:
        return self.final.complete

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_json(),
            "embedded": self.embedded,
            "caught_up": self.caught_up,
            "rounds": self.rounds,
            "switched": self.switched,
            "previous": self.plan.active,
            "active": self.active,
            "coverage": {"key": self.final.key, "have": self.final.have,
                         "memories": self.final.total, "complete": self.final.complete,
                         "seq": self.final.seq},
            "seconds": round(self.seconds, 3),
        }


def reembed(
    memory_or_store: Any,
    target: Embedder,
    *,
    batch: int = 256,
    switch: bool = True,
    progress: Progress | None = None,
) -> ReembedReport:
    """Give every memory a vector from `target`, then (with `switch`) make it the store's
    active embedder. Raises ReembedError (nothing switched) when the embedder fails or writers
    outrun it; a later call resumes."""
    store: Store = getattr(memory_or_store, "store", memory_or_store)
    started = time.perf_counter()
    try:
        identity = target.identity()
    except EmbedderError as exc:
        raise ReembedError(f"the target embedder cannot be used: {exc.message}; nothing was "
                           "changed", hint=exc.hint or "check the embedder and retry") from exc
    plan = plan_reembed(store, identity)
    store.register_embedder(identity)
    run = _Run(store, target, identity, max(1, min(batch, MAX_PAGE)), progress or NoProgress())
    try:
        cursor, rounds = run.backfill()
        if switch and plan.active != identity.key:
            run.build_index()
            store.set_active_embedder(identity.key)
            log.warning("switched the store's active embedder from %s to %s", plan.active,
                        identity.key)
            cursor = run.catch_up(cursor)  # writes that raced the switch
        final = coverage(store, identity.key)
        if not switch:
            run.build_index()
    except EmbedderError as exc:
        active = store.meta().active_embedder
        raise ReembedError(
            f"re-embedding with {identity.key} stopped: {exc.message}. {run.written} vectors "
            f"were written and kept; the active embedder is still {active}",
            hint=f"{(exc.hint or 'check the embedder').rstrip('.')}; then run the same "
            "`memvault reembed` again: it resumes with the memories still lacking a vector",
        ) from exc
    active = store.meta().active_embedder
    log.info("re-embedded with %s: %d + %d caught up in %d rounds, %.1fs; active %s",
             identity.key, run.embedded, run.caught_up, rounds, time.perf_counter() - started,
             active)
    return ReembedReport(plan, run.embedded, run.caught_up, rounds,
                         bool(switch and plan.active != identity.key), active, final,
                         time.perf_counter() - started)


class _Run:
    def __init__(self, store: Store, target: Embedder, identity: EmbedderIdentity, batch: int,
                 progress: Progress) -> None:
        self.store = store
        self.target = target
        self.identity = identity
        self.key = identity.key
        self.batch = batch
        self.progress = progress
        self.embedded = 0
        self.caught_up = 0
        self._catch_advance: Advance | None = None

    @property
    def written(self) -> int:
        return self.embedded + self.caught_up

    # -- the pass over memories lacking a target vector

    def _missing(self) -> tuple[int, list[str]]:
        with self.store.snapshot() as snap:
            have: set[str] = set()
            for ids, _ in snap.iter_vectors(self.key):
                have.update(ids)
            missing = [r.id for page in snap.iter_records() for r in page if r.id not in have]
            return snap.seq, missing

    def rescan(self, description: str) -> int:
        seq, missing = self._missing()
        advance = self.progress.task(description, len(missing))
        self.embedded += self.embed_ids(missing, advance)
        return seq

    def backfill(self) -> tuple[int, int]:
        """The pass plus catch-up rounds until converged; returns (journal cursor, rounds)."""
        cursor = self.rescan(f"re-embedding with {self.key}")
        for rounds in range(1, MAX_ROUNDS + 1):
            cursor = self.catch_up(cursor)
            cov = coverage(self.store, self.key)
            pending = self.store.journal(after_seq=cursor, limit=JOURNAL_PAGE)
            pending = [e for e in pending if e.seq <= cov.seq]
            retexted = [e for e in pending if _text_changed(e)]
            if cov.complete and not retexted:
                return cursor, rounds
            if not pending:  # quiet, yet something lacks a vector: not explained by the journal
                cursor = self.rescan(f"re-embedding with {self.key} (rescan)")
                continue
            if cov.missing <= len(pending) and len(pending) < self.batch:
                # Steady traffic: what is missing arrived during the check; caught up next.
                return cursor, rounds
        final = coverage(self.store, self.key)
        raise ReembedError(
            f"writes kept arriving faster than {self.key} could embed them: after "
            f"{MAX_ROUNDS} rounds {final.missing} of {final.total} memories still lack a vector; "
            "nothing was switched", hint="run `memvault reembed` again at a quieter time "
            "(the vectors written so far are kept), or give the embedder more capacity")

    # -- writes made meanwhile, from the journal

    def catch_up(self, cursor: int) -> int:
        while entries := self.store.journal(after_seq=cursor, limit=JOURNAL_PAGE):
            ids = list(dict.fromkeys(e.memory_id for e in entries
                                     if e.op == "ADD" or _text_changed(e)))
            if ids:
                if self._catch_advance is None:
                    self._catch_advance = self.progress.task("catching up with writes", None)
                self.caught_up += self.embed_ids(ids, self._catch_advance)
            cursor = entries[-1].seq
        return cursor

    # -- one page at a time: read current texts, embed, write

    def embed_ids(self, ids: list[str], advance: Advance) -> int:
        written = 0
        for start in range(0, len(ids), self.batch):
            page = ids[start:start + self.batch]
            written += self._embed_page(page)
            advance(len(page))
        return written

    def _embed_page(self, ids: list[str]) -> int:
        for _attempt in range(3):
            records = self.store.list(parse_filters({"id": {"in": ids}}))
            if not records:
                return 0  # deleted meanwhile
            vectors = self.target.embed([r.memory for r in records])
            if vectors.shape != (len(records), self.identity.dims):
                raise EmbedderError(
                    f"the embedder {self.key} returned vectors of shape {vectors.shape} for "
                    f"{len(records)} texts, expected {self.identity.dims} dims",
                    hint="the model behind the endpoint changed; check MEMVAULT_EMBEDDER_URL "
                    "and the model name")
            try:
                self.store.put_vectors([r.id for r in records],
                                       np.asarray(vectors, dtype=np.float32), self.key)
                return len(records)
            except InvalidInput:
                # A memory of this page was deleted between the read and the write (foreign
                # key): read the page again without it.
                ids = [r.id for r in records]
                continue
        raise StoreError(f"re-embedding a page of {len(ids)} memories kept conflicting with "
                         "concurrent deletes", hint="run `memvault reembed` again")

    def build_index(self) -> None:
        advance = self.progress.task("building the search index", None)
        self.store.build_search_indexes()  # PostgreSQL: the target's HNSW, concurrently
        advance(1)


def _text_changed(entry: JournalEntry) -> bool:
    if entry.op != "UPDATE":
        return False
    return (entry.before or {}).get("memory") != (entry.after or {}).get("memory")
