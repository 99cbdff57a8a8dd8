"""Restore: newest valid backup (or one by id), the shipped journal replayed up to a time,
re-embedding when the configured embedder is not the backup's, counts verified after.

The target is marked `restore_incomplete` (store meta) from the first write until the counts
have been verified, so an interrupted restore is refused by the server and can be re-run.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from memvault.backup.candidates import candidates, list_all
from memvault.backup.catalog import BackupEntry
from memvault.backup.coverage import (
    HighWater,
    Loss,
    known_lost,
    lineage_high_water,
    newer_snapshot,
)
from memvault.backup.crypto import Cipher, cipher_for
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.errors import BackupCorrupt, BackupError, RestoreLoss, RestoreRefused
from memvault.backup.format import SnapshotData, read_snapshot
from memvault.backup.head import LineageHead, read_head
from memvault.backup.journal import Chain, SegmentRef, clock_steps_back, follow_chain, list_segments
from memvault.backup.replay import check_replayed, replay
from memvault.embed import EmbedderIdentity
from memvault.errors import InvalidInput
from memvault.progress import NoProgress, Progress
from memvault.store import JournalEntry, MetaKey, namespace_key, utc_now

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.embed import Embedder
    from memvault.store import Store

log = logging.getLogger("memvault.backup.restore")
INCOMPLETE_KEY = MetaKey.RESTORE_INCOMPLETE
# One bulk_load per million memories: PostgreSQL drops and rebuilds its HNSW index around a large
# load (much faster than inserting row by row), so fewer, larger loads are better.
LOAD_BATCH = 1_000_000


def restore_incomplete(store: Store) -> dict[str, Any] | None:
    """The marker left by an unfinished restore, or None: a marked store must not be served."""
    marker = store.get_meta(INCOMPLETE_KEY)
    return marker or None


@dataclass
class RestorePlan:
    entry: BackupEntry
    at: datetime | None
    chain: Chain
    replay: list[JournalEntry]
    configured: EmbedderIdentity | None
    reembed: bool
    expected_counts: dict[str, int]
    loss: Loss
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Any:
        assert self.entry.manifest is not None
        return self.entry.manifest

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        last = self.replay[-1] if self.replay else None
        return {
            "source": {"destination": self.entry.destination.url, "backup": m.id,
                       "created_at": m.created_at, "seq": m.seq, "store_id": m.store_id,
                       "lineage_id": m.lineage_id, "encrypted": m.encrypted},
            "at": self.at.isoformat() if self.at else None,
            "journal": {"entries": len(self.replay), "upto_seq": last.seq if last else m.seq,
                        "upto_ts": last.ts if last else None,
                        "shipped_upto_seq": self.chain.upto_seq, "faults": self.chain.faults,
                        "clock_steps_back": clock_steps_back(self.chain.all_entries())},
            "loss": self.loss.to_json(),
            "warnings": self.warnings,
            "counts_in_backup": m.counts,
            "counts_after_restore": self.expected_counts,
            "total_after_restore": sum(self.expected_counts.values()),
            "embedder": {"backup": m.active_embedder,
                         "configured": self.configured.key if self.configured else None,
                         "reembed": self.reembed},
            "fallbacks": self.skipped,
        }


def _parse_at(at: str | datetime | None) -> datetime | None:
    if at is None or isinstance(at, datetime):
        return at
    try:
        parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--at {at!r} is not an ISO-8601 time",
                           hint="e.g. 2026-08-22T10:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _expected_counts(data: SnapshotData, replay: list[JournalEntry]) -> dict[str, int]:
    """The snapshot's counts moved by the replayed journal (as the target should now hold)."""
    counts = Counter(data.counts())
    present = {row["id"] for row in data.rows}
    for entry in replay:
        if entry.op == "ADD" and entry.after and entry.memory_id not in present:
            present.add(entry.memory_id)
            counts[_namespace(entry.after)] += 1
        elif entry.op == "DELETE" and entry.before and entry.memory_id in present:
            present.discard(entry.memory_id)
            counts[_namespace(entry.before)] -= 1
    return {k: v for k, v in sorted(counts.items()) if v > 0}


def _namespace(data: dict[str, Any]) -> str:
    return namespace_key(data.get("user_id"), data.get("agent_id"), data.get("run_id"))


@dataclass
class Survey:
    """What the destinations say about the chosen lineage: candidates best first, every
    backup listed, each destination's head and segments, and the lineage's high-water mark."""

    candidates: list[BackupEntry]
    entries: list[BackupEntry]
    heads: dict[str, LineageHead | None]
    refs: dict[str, list[SegmentRef]]
    high_water: HighWater
    warnings: list[str]


def survey(dests: list[Destination], which: str, at: datetime | None, *,
           lineage: str | None = None, target_lineage: str | None = None,
           high_water: int | None = None) -> Survey:
    entries, problems = list_all(dests)
    chosen = candidates(dests, which, at, lineage=lineage, target_lineage=target_lineage,
                        entries=entries)
    assert chosen[0].manifest is not None
    lineage_id = chosen[0].manifest.lineage_id
    heads: dict[str, LineageHead | None] = {}
    refs: dict[str, list[SegmentRef]] = {}
    warnings = [f"a destination could not be listed: {p}" for p in problems]
    for dest in dests:
        try:
            heads[dest.url] = read_head(dest, lineage_id)
        except BackupError as exc:
            heads[dest.url] = None
            warnings.append(f"the lineage head in {dest.url} is not readable ({exc.message}); "
                            "the newest journal segment there is not vouched for")
            log.error("%s", warnings[-1])
        try:
            refs[dest.url] = list_segments(dest, lineage_id)
        except BackupError as exc:
            refs[dest.url] = []
            warnings.append(f"the journal in {dest.url} could not be listed: {exc.message}")
    mark = lineage_high_water(lineage_id, entries, list(heads.values()), list(refs.values()),
                              high_water)
    return Survey(chosen, entries, heads, refs, mark, warnings)


def _plan_for(entry: BackupEntry, at: datetime | None, cipher: Cipher | None,
              configured: EmbedderIdentity | None, found: Survey) -> RestorePlan:
    manifest = entry.manifest
    assert manifest is not None
    dest = entry.destination
    chain = follow_chain(dest, manifest.lineage_id, manifest.seq, cipher,
                         found.refs.get(dest.url), found.heads.get(dest.url))
    replay_entries = chain.entries(at)
    backup_identity = None
    if manifest.active_embedder and any(e.key == manifest.active_embedder
                                        for e in manifest.embedders):
        backup_identity = manifest.identity(manifest.active_embedder)
    reembed = bool(manifest.total) and configured is not None and (
        backup_identity is None or not backup_identity.same_model(configured))
    # Counts per namespace from the manifest, moved by the journal (ids not needed: an ADD in
    # the journal is always a new id, a DELETE always an existing one).
    counts = Counter(manifest.counts)
    for journal_entry in replay_entries:
        if journal_entry.op == "ADD" and journal_entry.after:
            counts[_namespace(journal_entry.after)] += 1
        elif journal_entry.op == "DELETE" and journal_entry.before:
            counts[_namespace(journal_entry.before)] -= 1
    expected = {k: v for k, v in sorted(counts.items()) if v > 0}
    reached = chain.upto_seq
    everything = chain.all_entries()
    if at is not None and everything and replay_entries != everything:
        reached = max(reached, found.high_water.seq)  # the chain reaches past the time asked
    loss = Loss(reached, found.high_water, known_lost(chain.beyond, reached),
                newer_snapshot(found.entries, manifest.lineage_id, manifest.seq)
                if reached < found.high_water.seq else None, expected)
    warnings = list(found.warnings)
    steps = clock_steps_back(everything)
    if steps:
        warnings.append(f"{len(steps)} journal entries are stamped earlier than the entry "
                        f"before them (the writer's clock went back), first at seq "
                        f"{steps[0]['seq']}: --at follows seq order up to the last entry "
                        "stamped at or before it")
    if chain.duplicates:
        warnings.append(f"journal segments overlapping others were not replayed: "
                        f"{', '.join(chain.duplicates)}")
    return RestorePlan(entry, at, chain, replay_entries, configured, reembed, expected, loss,
                       warnings=warnings)


def plan_restore(settings: Settings, which: str = "latest", at: str | datetime | None = None,
                 *, configured: EmbedderIdentity | None = None,
                 destinations: list[Destination] | None = None, lineage: str | None = None,
                 target_lineage: str | None = None, high_water: int | None = None
                 ) -> RestorePlan:
    """The plan for the best candidate (no data read beyond manifests and journal segments)."""
    when = _parse_at(at)
    dests = destinations if destinations is not None else open_destinations(settings)
    cipher = _cipher(settings)
    found = survey(dests, which, when, lineage=lineage, target_lineage=target_lineage,
                   high_water=high_water)
    return _plan_for(found.candidates[0], when, cipher, configured, found)


def _cipher(settings: Settings) -> Cipher | None:
    secret = settings.backup_encryption_key
    return cipher_for(secret.get_secret_value() if secret else None)


@dataclass
class RestoreReport:
    plan: RestorePlan
    loaded: int
    replayed: int
    counts: dict[str, int]
    seq: int
    searchable_s: float = 0.0  # start to verified and served (exact search works)
    indexed_s: float = 0.0  # start to approximate-search indexes built

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan.to_json(), "loaded": self.loaded, "replayed": self.replayed,
                "counts": self.counts, "total": sum(self.counts.values()),
                "next_seq_after": self.seq, "searchable_s": round(self.searchable_s, 3),
                "indexed_s": round(self.indexed_s, 3)}


def run_restore(
    store: Store,
    settings: Settings,
    embedder: Embedder,
    which: str = "latest",
    at: str | datetime | None = None,
    *,
    yes: bool = False,
    destinations: list[Destination] | None = None,
    progress: Progress | None = None,
    lineage: str | None = None,
    high_water: int | None = None,
    allow_loss: bool = False,
) -> RestoreReport:
    """Restore the chosen lineage's newest usable backup and its journal. `lineage` picks the
    lineage (default: the target's own, else the only one with valid backups); `high_water`
    is a seq the caller knows the lineage reached (the guard's ledger). A result short of the
    lineage's high-water mark raises RestoreLoss before anything is written, unless
    `allow_loss` (then the plan's `loss` says what is missing)."""
    progress = progress or NoProgress()
    when = _parse_at(at)
    dests = destinations if destinations is not None else open_destinations(settings)
    cipher = _cipher(settings)
    marker = restore_incomplete(store)
    present = store.total()
    if present and not yes and not marker:
        raise RestoreRefused(
            f"the target store holds {present} memories; restore only fills an empty store",
            hint="pass --yes to replace them (they are deleted through the journal first)")
    configured = embedder.identity()
    found = survey(dests, which, when, lineage=lineage, target_lineage=store.meta().lineage_id,
                   high_water=high_water)
    skipped: list[str] = []
    for plan in _plans(found, when, cipher, configured):
        entry = plan.entry
        try:
            data = read_snapshot(entry.destination, plan.manifest, cipher, folder=entry.folder)
        except BackupCorrupt as exc:
            message = f"backup {entry.id} in {entry.destination} is damaged: {exc.message}"
            log.error("%s; trying the previous valid backup", message)
            skipped.append(message)
            continue
        plan.skipped = skipped
        if plan.loss.lost:
            if not allow_loss:
                raise RestoreLoss(
                    "restore refused, it would lose data: " + plan.loss.describe()
                    + (f" (skipped: {'; '.join(skipped)})" if skipped else ""),
                    loss=plan.loss.to_json(),
                    hint="run `memvault backup verify --all --read-data` to see what is "
                         "damaged; `memvault restore --allow-loss` restores what is there")
            log.error("restoring with known loss (--allow-loss): %s", plan.loss.describe())
        return _apply(store, embedder, plan, data, present, marker, progress)
    raise RestoreRefused("no usable backup: " + "; ".join(skipped),
                         hint="run `memvault backup verify --all --read-data` for details")


def _plans(found: Survey, at: datetime | None, cipher: Cipher | None,
           configured: EmbedderIdentity | None) -> Iterator[RestorePlan]:
    """Plans best first: highest seq, and among copies at one seq (one backup in several
    destinations) the one whose journal reaches furthest."""
    by_seq: dict[int, list[BackupEntry]] = {}
    for entry in found.candidates:
        by_seq.setdefault(entry.seq, []).append(entry)
    for seq in sorted(by_seq, reverse=True):
        plans = [_plan_for(entry, at, cipher, configured, found) for entry in by_seq[seq]]
        plans.sort(key=lambda p: p.loss.reached, reverse=True)
        yield from plans


def _apply(store: Store, embedder: Embedder, plan: RestorePlan, data: SnapshotData,
           present: int, marker: dict[str, Any] | None, progress: Progress) -> RestoreReport:
    manifest = plan.manifest
    started = time.perf_counter()
    if marker:
        log.warning("the target holds an unfinished restore (%s); starting it over", marker)
    store.set_meta(INCOMPLETE_KEY, {"backup": manifest.id,
                                    "destination": plan.entry.destination.url,
                                    "started_at": utc_now(), "pid": os.getpid()})
    # Over the lineage's own memories the clear is journaled, so the load must be too: the
    # shipped journal then says "deleted, then loaded again", and a later restore from an
    # older backup replays to what this one restored, not to an empty store.
    journal_load = bool(present) and store.meta().lineage_id == manifest.lineage_id
    if present:
        _clear(store, progress)
    configured = embedder.identity()
    for item in manifest.embedders:
        if "probes" in item.identity:
            store.register_embedder(EmbedderIdentity.from_json(item.identity))
    store.register_embedder(configured)
    with store.deferring_search_index():  # exact search first, ANN index after (PostgreSQL)
        loaded = _load(store, embedder, data, plan.reembed, configured.key, progress,
                       journal=journal_load)
    if plan.reembed or not manifest.active_embedder:
        store.set_active_embedder(configured.key)
    else:
        store.set_active_embedder(manifest.active_embedder)
    active = configured.key if plan.reembed or not manifest.active_embedder \
        else manifest.active_embedder
    replayed = replay(store, embedder, plan.replay, active, progress)
    differences = check_replayed(store, plan.replay)
    if differences:
        raise BackupError(
            f"restore of {manifest.id}: after replaying the journal the store does not hold "
            f"what the journal says: {'; '.join(differences)}; the target stays marked "
            "incomplete", hint="run `memvault backup verify --all --read-data`, then re-run "
            "the restore")
    # Past a known loss too: the lost seqs were handed out once and are never reused.
    seq = max(manifest.seq, plan.chain.upto_seq, plan.loss.high_water.seq)
    # Numbering continues the lineage: new writes never reuse a seq that a backup holds.
    store.advance_seq(seq)
    store.set_meta(MetaKey.LINEAGE_ID, manifest.lineage_id)
    expected = _expected_counts(data, plan.replay)
    counts = dict(sorted(store.counts().items()))
    if counts != expected:
        raise BackupError(
            f"restore of {manifest.id} finished with counts {counts}, expected {expected}; the "
            "target stays marked incomplete", hint="re-run the restore; if it repeats, restore "
            "an older backup by id")
    vectors = store.vector_counts().get(active, 0)
    if vectors != sum(counts.values()):
        raise BackupError(f"restore of {manifest.id}: {vectors} vectors under {active} for "
                          f"{sum(counts.values())} memories; the target stays marked incomplete",
                          hint="re-run the restore")
    store.set_meta(MetaKey.RESTORED_FROM, {"backup": manifest.id,
                                     "destination": plan.entry.destination.url,
                                     "seq": manifest.seq, "replayed_upto": seq,
                                     "at": plan.at.isoformat() if plan.at else None,
                                     "finished_at": utc_now()})
    store.set_meta(INCOMPLETE_KEY, None)
    searchable = time.perf_counter() - started
    log.info("restored %s from %s: %d memories loaded, %d journal entries replayed, served "
             "after %.1fs", manifest.id, plan.entry.destination, loaded, replayed, searchable)
    advance = progress.task("building the search index", None)
    store.build_search_indexes()  # the store is already served (exactly) meanwhile
    advance(1)
    return RestoreReport(plan, loaded, replayed, counts, seq, searchable,
                         time.perf_counter() - started)


def _clear(store: Store, progress: Progress) -> None:
    ids = [r.id for r in store.list(None)]
    advance = progress.task("clearing the target", len(ids))
    for start in range(0, len(ids), 1000):
        store.delete(ids[start:start + 1000], "restore")
        advance(len(ids[start:start + 1000]))


def _load(store: Store, embedder: Embedder, data: SnapshotData, reembed: bool, target_key: str,
          progress: Progress, *, journal: bool = False) -> int:
    rows = {key: {mid: i for i, mid in enumerate(ids)} for key, (ids, _) in data.vectors.items()}
    advance = progress.task("loading memories", len(data.records))
    embed_advance = progress.task(f"re-embedding with {target_key}", len(data.records)) \
        if reembed else None
    loaded = 0
    for start in range(0, len(data.records), LOAD_BATCH):
        batch = data.records[start:start + LOAD_BATCH]
        complete: dict[str, np.ndarray] = {}
        partial: list[tuple[str, list[str], np.ndarray]] = []
        for key, (_, matrix) in data.vectors.items():
            index = rows[key]
            have = [i for i, r in enumerate(batch) if r.id in index]
            picked = matrix[[index[batch[i].id] for i in have]] if have else None
            if picked is None:
                continue
            if len(have) == len(batch):
                complete[key] = picked
            else:
                partial.append((key, [batch[i].id for i in have], picked))
        if reembed:
            assert embed_advance is not None
            complete[target_key] = _embed(embedder, [r.memory for r in batch], embed_advance)
        loaded += store.bulk_load(batch, complete, journal=journal, actor="restore")
        for key, ids, matrix in partial:
            store.put_vectors(ids, matrix, key)
        advance(len(batch))
    return loaded


def _embed(embedder: Embedder, texts: list[str], advance: Any, step: int = 256) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), step):
        parts.append(embedder.embed(texts[start:start + step]))
        advance(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
