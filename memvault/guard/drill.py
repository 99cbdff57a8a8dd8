"""Restore drills: prove that the newest backup restores, on a schedule and on demand.

A backup that was never restored is not a backup. `run_drill` restores the newest valid backup
(the same choice as `memvault restore latest`, shipped journal included) into a scratch SQLite
store under `<data_dir>/tmp/drill-*` (the backup format is backend-neutral, so this works for
every backend), keeps the backup's own vectors (a drill never re-embeds), verifies the result,
always deletes the scratch store and records the outcome as a new file in every backup
destination, under the drilled lineage and named by the seq it restored to
(`lineages/<lineage>/drills/<seq>-<n><time>.json`, the newest 20 by seq kept; format-1
`drills/<time>.json` records are still read). "Newest" is by seq, never by the clock: a drill
recorded with a clock that ran ahead never hides a later failing one. It never touches the
live store.

`DrillJob` (guard/drill_job.py) runs a drill every MEMVAULT_DRILL_INTERVAL in `serve` (leader
only), keeps `memvault_restore_drill_last_success_timestamp_seconds` and fires / resolves
`DrillFailed`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memvault.backup.catalog import BackupEntry
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.errors import BackupError, RestoreRefused
from memvault.backup.layout import RecordKind
from memvault.backup.records import (
    lineage_record_keys,
    newest_first,
    next_record_key,
    put_records,
)
from memvault.embed import EmbedderIdentity
from memvault.errors import MemvaultError
from memvault.guard.alerts import Alert
from memvault.progress import NoProgress, Progress

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.embed import Embedder
    from memvault.store import Store

log = logging.getLogger("memvault.guard.drill")

KEEP = 20
AHEAD_TOLERANCE_S = 300.0
SAMPLE = 50  # memories searched with their own vectors
TEXT_SAMPLE = 5  # of those, texts embedded again and compared with their stored vectors
TEXT_MIN_SIMILARITY = 0.9
STALE_SCRATCH_SECONDS = 6 * 3600  # a scratch dir untouched this long was left by a crash
STARTUP_DELAY_SECONDS = 60.0  # startup and the guard's first checks come first
TICK_SECONDS = 60.0
RETRY_SECONDS = 3600.0  # after a failed drill, try again this soon (or the interval if shorter)
METRIC = "memvault_restore_drill_last_success_timestamp_seconds"
ALERT = Alert.DrillFailed

# Why a drill failed (the `reason` of a report), stable for scripts.
NO_BACKUP, FALLBACK, JOURNAL, RESTORE, VERIFY, ERROR = (
    "no_backup", "fallback", "journal", "restore", "verify", "error")

HINT_VERIFY = ("run `memvault backup verify --all --read-data` to see what is damaged, take a "
               "fresh backup with `memvault backup create`, then run `memvault drill` again")


class DrillError(BackupError):
    code = "drill_failed"


class DrillCancelled(DrillError):
    """The server is shutting down: the drill stops, leaves no scratch store and no record."""

    code = "drill_cancelled"


# ------------------------------------------------------------------ the backup's own vectors


class BackupVectors:
    """The embedder a drill restores with: its identity is the backup's active embedder, so
    `run_restore` keeps the backup's vectors and never re-embeds them. Only the texts of shipped
    journal entries (which carry no vectors) need embedding; they are embedded by the configured
    embedder when it is the same model as the backup's, and refused otherwise (a drill must not
    put vectors of another model under the backup's key)."""

    def __init__(self, backup: EmbedderIdentity | None,
                 configured: Callable[[], Embedder]) -> None:
        self._backup = backup
        self._configured = configured
        self.embedded = 0

    def identity(self) -> EmbedderIdentity:
        if self._backup is not None:
            return self._backup
        return self._configured().identity()  # an empty backup: any embedder will do

    def embed(self, texts: list[str]) -> np.ndarray:
        embedder = self._configured()
        configured = embedder.identity()
        if self._backup is not None and not self._backup.same_model(configured):
            raise DrillError(
                f"the shipped journal holds {len(texts)}+ texts to embed with the backup's "
                f"embedder {self._backup.key}, but the configured embedder is {configured.key} "
                f"(fingerprint {configured.fingerprint} vs {self._backup.fingerprint}); a drill "
                "does not mix models",
                hint="finish the move to the new embedder (`memvault backup create`, then "
                "`memvault restore latest --yes` re-embeds), or set MEMVAULT_EMBEDDER back; then "
                "run `memvault drill` again")
        self.embedded += len(texts)
        return embedder.embed(texts)

    def same_model(self) -> tuple[Embedder | None, str | None]:
        """The configured embedder if it is the backup's model, else why not (for the spot
        check of texts against their vectors, which is skipped then)."""
        if self._backup is None:
            return None, "the backup names no active embedder"
        try:
            embedder = self._configured()
            configured = embedder.identity()
        except Exception as exc:
            return None, f"the configured embedder is unavailable: {exc}"
        if not self._backup.same_model(configured):
            return None, (f"the configured embedder {configured.key} is not the backup's "
                          f"{self._backup.key}")
        return embedder, None


def _backup_identity(entry: BackupEntry) -> EmbedderIdentity | None:
    manifest = entry.manifest
    if manifest is None or not manifest.active_embedder:
        return None
    if not any(e.key == manifest.active_embedder for e in manifest.embedders):
        return None
    return manifest.identity(manifest.active_embedder)


# ------------------------------------------------------------------ the report


def _backup_json(entry: BackupEntry | None) -> dict[str, Any] | None:
    if entry is None or entry.manifest is None:
        return None
    m = entry.manifest
    return {"id": m.id, "destination": entry.destination.url, "created_at": m.created_at,
            "seq": m.seq, "total": m.total, "active_embedder": m.active_embedder,
            "lineage_id": m.lineage_id}


@dataclass
class DrillReport:
    ok: bool
    started_at: str
    finished_at: str = ""
    newest: dict[str, Any] | None = None  # the newest valid backup when the drill started
    restored: dict[str, Any] | None = None  # the backup the restore really used
    fallbacks: list[str] = field(default_factory=list)
    journal: dict[str, Any] = field(default_factory=dict)
    expected_counts: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    vectors: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # None when ok; else one of the reason codes above
    error: str | None = None
    hint: str | None = None
    record: str | None = None  # the key of the record written
    record_problems: list[str] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)
    format: int = 1
    # A candidate's drill (`drill --config`): the backup's embedder, the candidate's, and
    # whether the restore re-embedded every memory with the candidate's.
    candidate: dict[str, Any] | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def parse_stamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ------------------------------------------------------------------ one drill


def run_drill(
    settings: Settings,
    *,
    destinations: list[Destination] | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    lineage_id: str | None = None,
    candidate: Embedder | None = None,
) -> DrillReport:
    """Restore the newest valid backup into a scratch store, verify it, delete the scratch
    store and record the result in every destination. Returns the report (ok or not); raises
    only DrillCancelled (when `progress` says to stop). `embedder` is the configured one, used
    only for shipped journal texts (made from the settings when needed and not given);
    `lineage_id` names where a drill that found no backup at all is recorded. `candidate`:
    restore with this embedder instead (re-embedding when it is not the backup's model) to
    prove a candidate configuration; such a drill is reported, never recorded (it says nothing
    about the running configuration's backups)."""
    progress = progress or NoProgress()
    dests = destinations if destinations is not None else open_destinations(settings)
    report = DrillReport(ok=False, started_at=_now())
    started = time.perf_counter()
    made: list[Embedder] = []

    def configured() -> Embedder:
        if embedder is not None:
            return embedder
        if not made:
            from memvault.embed import make_embedder

            made.append(make_embedder(settings.embedder, settings))
        return made[0]

    scratch_root = Path(settings.data_dir) / "tmp"
    scratch = scratch_root / f"drill-{uuid.uuid4().hex[:12]}"
    try:
        _sweep_stale(scratch_root)
        _drill(settings, dests, scratch, configured, progress, report, lineage_id, candidate)
    except DrillCancelled:
        log.warning("restore drill cancelled (shutting down)")
        raise
    except Exception as exc:  # a drill must report, never crash its caller
        log.exception("restore drill crashed")
        message = exc.message if isinstance(exc, MemvaultError) else f"{type(exc).__name__}: {exc}"
        hint = getattr(exc, "hint", None) or "run `memvault -v drill` to see the log"
        _fail(report, ERROR, f"the drill failed: {message}", hint)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if scratch.exists():
            log.error("could not delete the drill's scratch store %s", scratch)
        report.finished_at = _now()
        report.durations["total_s"] = round(time.perf_counter() - started, 3)
    if candidate is None:
        _record(dests, report, lineage_id)
    if report.ok:
        log.info("restore drill passed: backup %s, %d memories in %.1fs",
                 (report.restored or {}).get("id"), report.total, report.durations["total_s"])
    else:
        log.error("restore drill FAILED: %s", report.error)
    return report


def _drill(settings: Settings, dests: list[Destination], scratch: Path,
           configured: Callable[[], Embedder], progress: Progress, report: DrillReport,
           lineage_id: str | None, candidate: Embedder | None) -> None:
    from memvault.backup.restore import candidates, run_restore
    from memvault.store.sqlite import SQLiteStore

    try:
        # The guarded store's lineage when it has backups (a destination may hold several);
        # the scratch store has a lineage of its own, so the choice is passed on explicitly.
        newest = candidates(dests, "latest", None, target_lineage=lineage_id)[0]
    except RestoreRefused as exc:
        _fail(report, NO_BACKUP, exc.message, "take a backup with `memvault backup create` "
              "(`memvault backup list` shows what is there), then run `memvault drill`")
        return
    report.newest = _backup_json(newest)
    stand_in = BackupVectors(_backup_identity(newest), configured)
    if candidate is not None:  # the restore re-embeds when the models differ
        backup = _backup_identity(newest)
        wanted = candidate.identity()
        report.candidate = {"backup_embedder": backup.key if backup else None,
                            "embedder": wanted.key, "reembedded": backup is not None
                            and not backup.same_model(wanted)}
        stand_in = BackupVectors(wanted, lambda: candidate)
    store = SQLiteStore(scratch / "drill.db", timeout=settings.db_timeout)
    try:
        restore_started = time.perf_counter()
        try:
            restored = run_restore(store, settings, stand_in, "latest", destinations=dests,
                                   progress=progress, lineage=newest.manifest.lineage_id
                                   if newest.manifest else None)
        except DrillCancelled:
            raise
        except MemvaultError as exc:
            cause = exc if isinstance(exc, DrillError) else exc.__cause__
            hint = cause.hint if isinstance(cause, DrillError) and cause.hint else (
                f"{exc.hint}; then run `memvault drill` again" if exc.hint else HINT_VERIFY)
            _fail(report, RESTORE, f"restoring backup {newest.id} failed: {exc.message}", hint)
            return
        report.durations["restore_s"] = round(time.perf_counter() - restore_started, 3)
        report.durations["searchable_s"] = round(restored.searchable_s, 3)
        plan = restored.plan
        report.restored = _backup_json(plan.entry)
        report.fallbacks = list(plan.skipped)
        report.expected_counts = dict(plan.expected_counts)
        report.journal = {"replayed": restored.replayed, "upto_seq": restored.seq,
                          "embedded": stand_in.embedded, "faults": list(plan.chain.faults)}
        verify_started = time.perf_counter()
        failures = _verify(store, plan.expected_counts, progress, report, stand_in)
        report.durations["verify_s"] = round(time.perf_counter() - verify_started, 3)
    finally:
        store.close()
    if plan.skipped or plan.entry.id != newest.id:
        _fail(report, FALLBACK, f"the newest backup {newest.id} ({newest.destination}) did "
              f"not restore ({'; '.join(plan.skipped) or 'not used'}); the restore fell back "
              f"to {plan.entry.id} in {plan.entry.destination}", HINT_VERIFY)
    elif failures:
        _fail(report, VERIFY, f"backup {plan.entry.id} restored, but " + "; ".join(failures),
              HINT_VERIFY)
    elif plan.chain.faults:
        _fail(report, JOURNAL, f"backup {plan.entry.id} restored, but the shipped journal "
              f"after it stops early: {'; '.join(plan.chain.faults)}", "check the backup "
              "destinations and `memvault backup verify`; the next snapshot starts a new "
              "chain, then run `memvault drill` again")
    else:
        report.ok = True


def _fail(report: DrillReport, reason: str, error: str, hint: str) -> None:
    report.ok, report.reason, report.error, report.hint = False, reason, error, hint


def _verify(store: Store, expected: dict[str, int], progress: Progress,
            report: DrillReport, stand_in: BackupVectors) -> list[str]:
    """Counts per namespace, one vector of the active embedder per memory, a sample of
    memories found first when searching with their own stored vectors (the index and the ids
    line up), and a few of their texts embedded again by the configured embedder, when it is
    the backup's model, close to their stored vectors (the vectors belong to their texts)."""
    failures: list[str] = []
    counts = dict(sorted(store.counts().items()))
    report.counts = counts
    if counts != dict(sorted(expected.items())):
        diff = {ns: {"expected": expected.get(ns, 0), "restored": counts.get(ns, 0)}
                for ns in sorted(set(counts) | set(expected))
                if counts.get(ns, 0) != expected.get(ns, 0)}
        failures.append(f"memories per namespace differ from the manifest and journal: {diff}")
    active = store.meta().active_embedder
    total = sum(counts.values())
    vectors = store.vector_counts().get(active or "", 0)
    report.vectors = {"embedder": active, "count": vectors}
    if total and vectors != total:
        failures.append(f"{vectors} vectors of the active embedder {active} for {total} memories")
    if not total or not active:
        report.sample = {"checked": 0, "found_first": 0, "misses": []}
        return failures
    picks = set(random.sample(range(vectors), min(SAMPLE, vectors)))
    advance = progress.task("searching a sample with its own vectors", len(picks))
    sample: list[tuple[str, np.ndarray]] = []
    with store.snapshot() as view:
        position = 0
        for ids, matrix in view.iter_vectors(active):
            for i, memory_id in enumerate(ids):
                if position + i in picks:
                    sample.append((memory_id, matrix[i].copy()))
            position += len(ids)
    misses = []
    for memory_id, vector in sample:
        hits = store.search(vector, active, None, top_k=5)
        best = hits[0][1] if hits else None
        # Identical texts in two namespaces have identical vectors: a tie at the top is fine.
        if best is None or memory_id not in {r.id for r, s in hits if s >= best - 1e-5}:
            misses.append(memory_id)
        advance(1)
    report.sample = {"checked": len(sample), "found_first": len(sample) - len(misses),
                     "misses": misses[:10]}
    if misses:
        failures.append(f"{len(misses)} of {len(sample)} sampled memories are not found first "
                        f"when searching with their own vectors (e.g. {misses[0]}): vectors and "
                        "ids do not line up")
    report.sample["texts"] = _text_check(store, sample[:TEXT_SAMPLE], stand_in, failures)
    return failures


def _text_check(store: Store, sample: list[tuple[str, np.ndarray]], stand_in: BackupVectors,
                failures: list[str]) -> dict[str, Any]:
    embedder, why_not = stand_in.same_model()
    if embedder is None or not sample:
        return {"checked": 0, "skipped": why_not or "no memories"}
    records = [store.get(memory_id) for memory_id, _ in sample]
    pairs = [(r, v) for r, (_, v) in zip(records, sample, strict=True) if r is not None]
    if not pairs:
        return {"checked": 0, "skipped": "the sampled memories are gone"}
    fresh = embedder.embed([r.memory for r, _ in pairs])
    similarities = [float(np.dot(f, v) / (np.linalg.norm(f) * np.linalg.norm(v) or 1.0))
                    for f, (_, v) in zip(fresh, pairs, strict=True)]
    far = [r.id for (r, _), sim in zip(pairs, similarities, strict=True)
           if sim < TEXT_MIN_SIMILARITY]
    if far:
        failures.append(f"{len(far)} of {len(pairs)} sampled texts embed far from their "
                        f"stored vectors (e.g. {far[0]}, lowest similarity "
                        f"{min(similarities):.2f}): the vectors do not belong to their texts")
    return {"checked": len(pairs), "min_similarity": round(min(similarities), 4),
            "far": far}


def _sweep_stale(root: Path) -> None:
    """Remove scratch stores left by a drill that was killed (nothing else uses drill-*)."""
    if not root.is_dir():
        return
    cutoff = time.time() - STALE_SCRATCH_SECONDS
    for path in root.glob("drill-*"):
        try:
            newest = max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
        except OSError:
            continue
        if newest < cutoff:
            log.warning("removing the scratch store %s left by an interrupted drill", path)
            shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ records


def _record(destinations: list[Destination], report: DrillReport,
            lineage_id: str | None) -> None:
    """Write the report as a new file to every destination, under the drilled lineage at the
    seq it restored to, and prune that lineage's drills to the newest KEEP by seq."""
    backup = report.restored or report.newest or {}
    lineage = backup.get("lineage_id") or lineage_id
    if not lineage:
        report.record_problems.append("no backup and no lineage: the drill is not recorded")
        return
    seq = int(report.journal.get("upto_seq") or backup.get("seq") or 0)
    stamp = parse_stamp(report.finished_at).strftime("%Y%m%dT%H%M%S%fZ")
    key = next_record_key(destinations, lineage, RecordKind.DRILLS, seq, stamp)
    report.record = key
    payload = json.dumps(report.to_json(), indent=1, default=str).encode()
    report.record_problems += put_records(destinations, key, payload,
                                          prefix=key.rsplit("/", 1)[0] + "/", keep=KEEP,
                                          what="drill record")
    if destinations and len(report.record_problems) == len(destinations):
        report.record = None


def read_drills(destinations: list[Destination], *, limit: int | None = None,
                cache: dict[str, dict[str, Any]] | None = None,
                lineage_id: str | None = None
                ) -> tuple[list[dict[str, Any]], list[str]]:
    """Drill records over all destinations (of `lineage_id`, or of every lineage; format-1
    records too), newest first by seq (a record written to several destinations counts once),
    and the problems met on the way. `cache` (key -> record) saves reading a record twice:
    records are never changed once written."""
    cache = cache if cache is not None else {}
    where, problems = lineage_record_keys(destinations, RecordKind.DRILLS, lineage_id)
    records: list[dict[str, Any]] = []
    for key in newest_first(where):
        if limit is not None and len(records) >= limit:
            break
        if key not in cache:
            for dest in where[key]:
                try:
                    data = json.loads(dest.read_bytes(key))
                    parse_stamp(data["finished_at"])
                    cache[key] = {**data, "record": key}
                    break
                except (MemvaultError, OSError, ValueError, TypeError, KeyError) as exc:
                    problems.append(f"unreadable drill record {key} in {dest.url}: {exc}")
        if key in cache:
            records.append(cache[key])
    return records, problems
