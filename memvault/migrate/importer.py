"""The import: read a whole source, account for every row, embed, load, verify.

Every source row ends in exactly one of three buckets: imported, skipped (a duplicate: its id
is already in the store or earlier in the source, or its text is already in its namespace) or
rejected (with the reason). Nothing is written until the whole source was read, checked and
embedded; the records then go in with `Store.bulk_load(..., journal=True)` (one transaction per
million memories), so history starts with an ADD from the import and the journal ships them to
the backups like any other write. Afterwards every imported id is looked up in the store, per
namespace.

Vectors: mem0 records no model identity, so by default every text is re-embedded with the
configured embedder. `keep_vectors` trusts mem0's vectors only after (1) the declared source
embedder is the very model memvault is configured with, (2) the dimensions agree and (3) a
sample of mem0's texts embedded now lands on the stored vectors (cosine >= 0.99 for at least
95% of the sample): a same-dimension model change is refused instead of silently ruining
ranking.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from memvault.embed import PROBE_MIN_SIMILARITY, normalize_rows
from memvault.errors import InvalidInput
from memvault.migrate.rows import MigrationError, Rejected, SourceRow, convert
from memvault.migrate.sources import Source
from memvault.progress import NoProgress, Progress
from memvault.store import MemoryRecord, MetaKey, utc_now

if TYPE_CHECKING:
    from memvault.embed import Embedder, EmbedderIdentity
    from memvault.memory import Memory

log = logging.getLogger("memvault.migrate")

LOAD_BATCH = 1_000_000  # as restore: one transaction per million memories
EMBED_BATCH = 256
PROBE_AGREE = 0.95  # share of the sample whose stored vector must match the declared model


@dataclass
class ImportOptions:
    keep_vectors: bool = False
    source_embedder: Embedder | None = None
    probe_sample: int = 64
    dry_run: bool = False
    actor: str = "import"
    max_examples: int = 20


@dataclass
class Problem:
    position: int
    id: str | None
    kind: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.position, "id": self.id, "kind": self.kind, "reason": self.reason}


@dataclass
class ImportReport:
    source: dict[str, Any]
    dry_run: bool
    target: dict[str, Any] = field(default_factory=dict)
    read: int = 0
    planned: int = 0  # rows that pass every check (imported when written)
    imported: int = 0
    written: bool = False
    skipped: list[Problem] = field(default_factory=list)
    rejected: list[Problem] = field(default_factory=list)
    namespaces: dict[str, dict[str, int]] = field(default_factory=dict)
    dims_found: dict[str, int] = field(default_factory=dict)
    vectors: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    verified: bool = False
    seconds: float = 0.0
    max_examples: int = 20

    @property
    def accounted(self) -> bool:
        return self.read == self.planned + len(self.skipped) + len(self.rejected) \
            and (not self.written or self.imported == self.planned)

    @property
    def ok(self) -> bool:
        return not self.faults and self.accounted and (self.dry_run or self.verified)

    def to_json(self) -> dict[str, Any]:
        def kinds(items: list[Problem]) -> dict[str, int]:
            return dict(Counter(p.kind for p in items).most_common())

        return {
            "ok": self.ok, "dry_run": self.dry_run, "source": self.source,
            "target": self.target, "read": self.read, "written": self.written,
            "would_import": self.planned, "imported": self.imported,
            "skipped": len(self.skipped), "rejected": len(self.rejected),
            "skipped_by_kind": kinds(self.skipped), "rejected_by_kind": kinds(self.rejected),
            "skipped_examples": [p.to_json() for p in self.skipped[:self.max_examples]],
            "rejected_examples": [p.to_json() for p in self.rejected[:self.max_examples]],
            "namespaces": self.namespaces, "dims_found": self.dims_found,
            "vectors": self.vectors, "notes": self.notes, "faults": self.faults,
            "verified": self.verified, "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.read / self.seconds, 1) if self.seconds else None,
        }


@dataclass
class _Candidate:
    record: MemoryRecord
    row: SourceRow


def _namespace_of(row: SourceRow) -> str:
    from memvault.store.records import namespace_key

    f = row.fields
    values = [f.get(k) if isinstance(f.get(k), str) else None
              for k in ("user_id", "agent_id", "run_id")]
    return namespace_key(*values) or "(none)"


def _existing(memory: Memory) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Ids and (namespace, hash) slots already in the target store."""
    ids: dict[str, str] = {}
    slots: dict[tuple[str, str], str] = {}
    if memory.store.total() == 0:
        return ids, slots
    with memory.store.snapshot() as snap:
        for batch in snap.iter_records():
            for r in batch:
                ids[r.id] = r.namespace
                slots[(r.namespace, r.hash)] = r.id
    return ids, slots


def run_import(memory: Memory, source: Source, options: ImportOptions | None = None,
               progress: Progress | None = None) -> ImportReport:
    options = options or ImportOptions()
    progress = progress or NoProgress()
    started = time.perf_counter()
    report = ImportReport(source.describe(), options.dry_run, max_examples=options.max_examples)
    embedder = memory.embedder
    configured = _target_identity(memory, options.dry_run, report)
    report.target = {"store": memory.store.backend, "embedder": configured.key,
                     "memories_before": memory.store.total()}
    if options.keep_vectors and options.source_embedder is None:
        raise MigrationError("--keep-vectors needs --source-embedder SPEC (the model that made "
                             "mem0's vectors: mem0 does not record it)",
                             hint="e.g. --source-embedder openai:text-embedding-3-small, or drop "
                             "--keep-vectors to re-embed every text (safe)")
    if options.keep_vectors and not source.provides_vectors:
        raise MigrationError(f"{source.kind} carries no vectors, so --keep-vectors cannot apply",
                             hint="drop --keep-vectors: every text is embedded with "
                             f"{configured.key}")
    want_vectors = options.keep_vectors or source.vector_identity is not None or \
        source.kind == "memvault-jsonl"

    # 1. read and convert every row
    now = utc_now()
    notes: list[str] = []
    per_ns: dict[str, Counter[str]] = defaultdict(Counter)
    candidates: list[_Candidate] = []
    dims = Counter[str]()
    advance = progress.task(f"reading {source.kind}", None)
    for row in source.rows(want_vectors):
        report.read += 1
        dims[str(row.dims) if row.dims else "none"] += 1
        try:
            record = convert(row, now, notes)
        except Rejected as exc:
            rid = str(row.id) if row.id is not None else None
            report.rejected.append(Problem(row.position, rid, exc.kind, exc.reason))
            namespace = _namespace_of(row)
            per_ns[namespace]["source"] += 1
            per_ns[namespace]["rejected"] += 1
        else:
            per_ns[record.namespace]["source"] += 1
            candidates.append(_Candidate(record, row))
        if report.read % 1000 == 0:
            advance(1000)
    advance(report.read % 1000)
    report.source = source.describe()  # now with what reading found (e.g. the dump format)
    report.notes = dict(Counter(notes + source.notes))
    report.dims_found = dict(dims)
    report.faults += source.faults
    if source.expected_total is not None and source.expected_total != report.read:
        report.faults.append(f"the source says it holds {source.expected_total} rows but "
                             f"{report.read} were read")

    # 2. duplicates: oldest first wins
    candidates.sort(key=lambda c: (c.record.created_at, c.record.id))
    have_ids, have_slots = _existing(memory)
    seen_ids: dict[str, int] = {}
    seen_slots: dict[tuple[str, str], int] = {}
    accepted: list[_Candidate] = []
    for cand in candidates:
        rec, pos = cand.record, cand.row.position
        slot = (rec.namespace, rec.hash)
        reason = None
        if rec.id in have_ids:
            reason = ("already in the store", f"id {rec.id} is already in the store "
                      f"({have_ids[rec.id]})")
        elif slot in have_slots:
            reason = ("text already in the store", f"the same text is already stored in "
                      f"{rec.namespace} as {have_slots[slot]}")
        elif rec.id in seen_ids:
            reason = ("duplicate id in source", f"id {rec.id} also on row {seen_ids[rec.id]}")
        elif slot in seen_slots:
            reason = ("duplicate text in source", f"same text in {rec.namespace} as row "
                      f"{seen_slots[slot]} (kept: the older one)")
        if reason:
            report.skipped.append(Problem(pos, rec.id, *reason))
            per_ns[rec.namespace]["skipped"] += 1
            continue
        seen_ids[rec.id] = pos
        seen_slots[slot] = pos
        accepted.append(cand)
        per_ns[rec.namespace]["imported"] += 1
    report.planned = len(accepted)
    report.namespaces = {ns: {k: c.get(k, 0) for k in ("source", "imported", "skipped",
                                                        "rejected")}
                         for ns, c in sorted(per_ns.items())}

    # 3. vectors: which are kept, which are embedded
    keep = _vector_plan(source, accepted, configured, options, report)
    to_embed = [i for i, c in enumerate(accepted) if i not in keep]
    report.vectors.update({"embedder": configured.key, "kept": len(keep),
                           "to_embed": len(to_embed)})
    if options.dry_run or report.faults:
        report.seconds = time.perf_counter() - started
        if report.faults and not options.dry_run:
            report.faults.append("nothing was written")
        return report

    matrix = np.zeros((len(accepted), configured.dims), dtype=np.float32)
    for i, vec in keep.items():
        matrix[i] = vec
    if to_embed:
        step = progress.task(f"embedding with {configured.key}", len(to_embed))
        for start in range(0, len(to_embed), EMBED_BATCH):
            chunk = to_embed[start:start + EMBED_BATCH]
            matrix[chunk] = embedder.embed([accepted[i].record.memory for i in chunk])
            step(len(chunk))

    # 4. load (one transaction per LOAD_BATCH), journaled
    records = [c.record for c in accepted]
    write = progress.task("writing", len(records))
    loaded = 0
    for start in range(0, len(records), LOAD_BATCH):
        batch = records[start:start + LOAD_BATCH]
        try:
            loaded += memory.store.bulk_load(batch, {configured.key: matrix[start:start
                                                                            + LOAD_BATCH]},
                                             journal=True, actor=options.actor)
        except InvalidInput as exc:
            raise MigrationError(
                f"the store refused the import ({exc.message}): a memory with one of these ids "
                f"or texts was written meanwhile; {loaded} of {len(records)} were imported "
                "before this batch", hint="re-run the same import: what is already in the "
                "store is skipped as a duplicate") from exc
        write(len(batch))
    report.imported = loaded
    report.written = True
    memory.store.set_meta(MetaKey.LAST_IMPORT, {"source": source.describe(), "at": utc_now(),
                                          "imported": loaded, "skipped": len(report.skipped),
                                          "rejected": len(report.rejected)})

    # 5. verify: every imported id is in the store, with a vector, per namespace
    _verify(memory, accepted, configured.key, report)
    report.seconds = time.perf_counter() - started
    log.info("import from %s: %d read, %d imported, %d skipped, %d rejected in %.1fs",
             source.location, report.read, report.imported, len(report.skipped),
             len(report.rejected), report.seconds)
    return report


def _target_identity(memory: Memory, dry_run: bool, report: ImportReport) -> EmbedderIdentity:
    if not dry_run:
        return memory.embedder_identity()  # adopts for an empty store, else must match
    identity = memory.embedder.identity()
    store = memory.store
    active = store.meta().active_embedder
    if active and active != identity.key and store.total():
        report.faults.append(f"the store's vectors were made by {active} but the configured "
                             f"embedder is {identity.key}: the import would be refused")
    return identity


def _vector_plan(source: Source, accepted: list[_Candidate], configured: EmbedderIdentity,
                 options: ImportOptions, report: ImportReport) -> dict[int, np.ndarray]:
    """Index -> vector kept from the source (normalised); the rest is embedded."""
    usable = {i: c.row.vector for i, c in enumerate(accepted)
              if c.row.vector is not None and c.row.vector.shape == (configured.dims,)
              and np.all(np.isfinite(c.row.vector)) and np.any(c.row.vector)}
    if source.vector_identity is not None and not options.keep_vectors:
        # a memvault export names its embedder with probe vectors: no guessing needed
        same = source.vector_identity.same_model(configured)
        report.vectors["mode"] = "keep (export's embedder is the configured one)" if same \
            else f"re-embed (export made by {source.vector_identity.key})"
        if not same:
            return {}
        return _normalised(usable)
    if not options.keep_vectors:
        report.vectors["mode"] = "re-embed"
        return {}
    report.vectors["mode"] = "keep"
    assert options.source_embedder is not None
    declared = options.source_embedder.identity()
    report.vectors["source_embedder"] = declared.key
    if not declared.same_model(configured):
        report.faults.append(
            f"mem0's vectors can only be kept when memvault embeds with the same model: "
            f"--source-embedder is {declared.key} but the configured embedder is "
            f"{configured.key}; set MEMVAULT_EMBEDDER (and --embedder-url) to the source model, "
            "or drop --keep-vectors to re-embed every text")
        return {}
    with_vector = [i for i, c in enumerate(accepted) if c.row.vector is not None]
    wrong_dims = Counter(int(accepted[i].row.vector.shape[0]) for i in with_vector  # type: ignore[union-attr]
                         if i not in usable)
    if wrong_dims:
        found = ", ".join(f"{d} dims: {n} rows" for d, n in sorted(wrong_dims.items()))
        report.faults.append(f"mem0's vectors have other dimensions than {declared.key} "
                             f"({found}): they were not made by it; drop --keep-vectors to "
                             "re-embed every text")
        return {}
    if not usable:
        report.faults.append("--keep-vectors: the source holds no usable vector")
        return {}
    indices = sorted(usable)
    sample = random.Random(0).sample(indices, min(options.probe_sample, len(indices)))
    fresh = options.source_embedder.embed([accepted[i].record.memory for i in sample])
    stored = normalize_rows(np.stack([usable[i] for i in sample]))
    similarity = np.sum(normalize_rows(fresh) * stored, axis=1)
    agree = float(np.mean(similarity >= PROBE_MIN_SIMILARITY))
    report.vectors["probe"] = {"sample": len(sample), "agree": round(agree, 4),
                               "min_similarity": round(float(similarity.min()), 4),
                               "median_similarity": round(float(np.median(similarity)), 4),
                               "threshold": PROBE_MIN_SIMILARITY}
    if agree < PROBE_AGREE:
        report.faults.append(
            f"mem0's vectors were not made by {declared.key}: re-embedding {len(sample)} sampled "
            f"texts gives a median cosine similarity of {np.median(similarity):.3f} with the "
            f"stored vectors ({agree:.0%} agree at >= {PROBE_MIN_SIMILARITY}); keeping them would "
            "silently ruin ranking. Drop --keep-vectors to re-embed every text, or name the "
            "model that made them with --source-embedder")
        return {}
    missing = len(accepted) - len(usable)
    if missing:
        report.notes["rows without a usable vector: embedded"] = missing
    return _normalised(usable)


def _normalised(vectors: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    if not vectors:
        return {}
    keys = list(vectors)
    matrix = normalize_rows(np.stack([vectors[k] for k in keys]))
    return dict(zip(keys, matrix, strict=True))


def _verify(memory: Memory, accepted: list[_Candidate], key: str, report: ImportReport) -> None:
    expected = Counter(c.record.namespace for c in accepted)
    wanted = {c.record.id for c in accepted}
    found: Counter[str] = Counter()
    with_vector = 0
    with memory.store.snapshot() as snap:
        for batch in snap.iter_records():
            for r in batch:
                if r.id in wanted:
                    found[r.namespace] += 1
        for ids, _ in snap.iter_vectors(key):
            with_vector += sum(1 for i in ids if i in wanted)
    for namespace in sorted(set(expected) | set(found)):
        if expected[namespace] != found[namespace]:
            report.faults.append(f"{namespace}: {expected[namespace]} imported but "
                                 f"{found[namespace]} found in the store afterwards")
    if with_vector != len(wanted):
        report.faults.append(f"{with_vector} of {len(wanted)} imported memories have a vector "
                             f"under {key}")
    report.verified = not report.faults
