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

`DrillJob` runs a drill every MEMVAULT_DRILL_INTERVAL in `serve` (leader only), keeps
`memvault_restore_drill_last_success_timestamp_seconds` and fires / resolves `DrillFailed`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import Gauge

from memvault.backup.catalog import BackupEntry
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.errors import BackupError, RestoreRefused
from memvault.backup.layout import RecordKind
from memvault.backup.progress import Advance, NoProgress, Progress
from memvault.backup.records import (
    lineage_record_keys,
    name_of,
    newest_first,
    next_record_key,
    put_records,
)
from memvault.embed.base import EmbedderIdentity
from memvault.errors import MemvaultError

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.embed import Embedder
    from memvault.guard.api import Guard
    from memvault.memory import Memory
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
ALERT = "DrillFailed"

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

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _parse(value: str) -> datetime:
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
) -> DrillReport:
    """Restore the newest valid backup into a scratch store, verify it, delete the scratch
    store and record the result in every destination. Returns the report (ok or not); raises
    only DrillCancelled (when `progress` says to stop). `embedder` is the configured one, used
    only for shipped journal texts (made from the settings when needed and not given);
    `lineage_id` names where a drill that found no backup at all is recorded."""
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
        _drill(settings, dests, scratch, configured, progress, report)
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
    _record(dests, report, lineage_id)
    if report.ok:
        log.info("restore drill passed: backup %s, %d memories in %.1fs",
                 (report.restored or {}).get("id"), report.total, report.durations["total_s"])
    else:
        log.error("restore drill FAILED: %s", report.error)
    return report


def _drill(settings: Settings, dests: list[Destination], scratch: Path,
           configured: Callable[[], Embedder], progress: Progress, report: DrillReport) -> None:
    from memvault.backup.restore import candidates, run_restore
    from memvault.store.sqlite import SQLiteStore

    try:
        newest = candidates(dests, "latest", None)[0]
    except RestoreRefused as exc:
        _fail(report, NO_BACKUP, exc.message, "take a backup with `memvault backup create` "
              "(`memvault backup list` shows what is there), then run `memvault drill`")
        return
    report.newest = _backup_json(newest)
    stand_in = BackupVectors(_backup_identity(newest), configured)
    store = SQLiteStore(scratch / "drill.db", timeout=settings.db_timeout)
    try:
        restore_started = time.perf_counter()
        try:
            restored = run_restore(store, settings, stand_in, "latest", destinations=dests,
                                   progress=progress)
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
    stamp = _parse(report.finished_at).strftime("%Y%m%dT%H%M%S%fZ")
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
                    _parse(data["finished_at"])
                    cache[key] = {**data, "record": key}
                    break
                except (MemvaultError, OSError, ValueError, TypeError, KeyError) as exc:
                    problems.append(f"unreadable drill record {key} in {dest.url}: {exc}")
        if key in cache:
            records.append(cache[key])
    return records, problems


# ------------------------------------------------------------------ the scheduled job


class _Stoppable:
    """Progress that raises DrillCancelled once `stop` is set, so a shutdown ends a running
    drill at its next step (and its scratch store is removed)."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def task(self, description: str, total: int | None) -> Advance:
        def advance(n: int) -> None:
            if self._stop.is_set():
                raise DrillCancelled("the drill was stopped: the server is shutting down")

        advance(0)
        return advance


class DrillJob:
    """Runs a drill every MEMVAULT_DRILL_INTERVAL on the guard's leader (the first one when
    the newest drill record is older than that, or none exists; never in the first
    `startup_delay` seconds), keeps the success-timestamp gauge on the guard's registry and
    fires / resolves DrillFailed through the guard's AlertManager: the alert follows the newest
    drill result, whether the job or `memvault drill` produced it."""

    def __init__(self, settings: Settings, memory: Memory, guard: Guard, *,
                 startup_delay: float = STARTUP_DELAY_SECONDS,
                 tick_seconds: float = TICK_SECONDS,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self.settings = settings
        self.memory = memory
        self.guard = guard
        self.startup_delay = startup_delay
        self.tick_seconds = tick_seconds
        self.retry_seconds = retry_seconds
        self.gauge = Gauge(METRIC, "When the newest successful restore drill finished (unix "
                           "time); 0 before the first.", registry=guard.registry)
        self.last: DrillReport | None = None  # the newest drill this job ran
        self.newest: dict[str, Any] | None = None  # the newest drill result known
        self.problems: list[str] = []
        self._cache: dict[str, dict[str, Any]] = {}
        self._alerted: str | None = None  # the result the alert state follows
        self._success_at = 0.0
        self._success_order: tuple[Any, ...] | None = None
        self._ran_mono: float | None = None  # when this job last ran a drill (monotonic)
        self._ran_result: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="memvault-drill", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _loop(self) -> None:
        self._guarded(self.refresh)  # the gauge and alert from the records, at once
        if self._stop.wait(self.startup_delay):
            return
        while not self._stop.is_set():
            self._guarded(self.tick)
            if self._stop.wait(self.tick_seconds):
                return

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except DrillCancelled:
            pass
        except Exception:  # the job must outlive any one bad pass
            log.exception("drill job pass crashed")

    # ---------------------------------------------------------------- one pass

    def tick(self) -> DrillReport | None:
        """Refresh from the records; on the leader, run a drill when one is due."""
        self.refresh()
        if not self.guard.elector.is_leader() or self.seconds_until_due() > 0:
            return None
        return self.run_now()

    def refresh(self) -> None:
        """Pick up the newest drill result from the destinations (another replica's, or
        `memvault drill`'s), for the gauge, the alert and when the next drill is due."""
        try:
            lineage: str | None = self.memory.store.meta().lineage_id
        except MemvaultError:
            lineage = None
        records, self.problems = read_drills(self.guard.destinations, cache=self._cache,
                                             lineage_id=lineage)
        for problem in self.problems:
            log.warning("%s", problem)
        if records:
            self._observe(records[0])
        ok = next((r for r in records if r.get("ok")), None)
        if ok is not None:
            self._set_success(ok)

    def seconds_until_due(self, now: float | None = None) -> float:
        """From the drill this job ran (monotonic), else from the newest record's stamp; a
        stamp ahead of this clock proves nothing: due now."""
        newest = self.newest
        if newest is None:
            return 0.0
        interval = self.settings.drill_interval
        wait = interval if newest.get("ok") else min(interval, self.retry_seconds)
        if self._ran_mono is not None and newest is self._ran_result:
            return max(0.0, self._ran_mono + wait - self.guard.clock.mono())
        now = self.guard.clock.wall().timestamp() if now is None else now
        finished = _parse(newest["finished_at"]).timestamp()
        if finished > now + AHEAD_TOLERANCE_S:
            return 0.0
        return max(0.0, finished + wait - now)

    def run_now(self) -> DrillReport | None:
        """One drill now (the job's thread, or a test). None when no valid backup exists yet:
        that is BackupStale's to report, and nothing is recorded."""
        from memvault.backup.restore import candidates

        try:
            candidates(self.guard.destinations, "latest", None)
        except RestoreRefused as exc:
            log.warning("restore drill waits: %s", exc.message)
            return None
        log.info("restore drill starting")
        report = run_drill(self.settings, destinations=self.guard.destinations,
                           progress=_Stoppable(self._stop), embedder=self.memory.embedder,
                           lineage_id=self.memory.store.meta().lineage_id)
        self.last = report
        result = report.to_json()
        if report.record:
            self._cache[report.record] = result
        self._ran_mono, self._ran_result = self.guard.clock.mono(), result
        self._observe(result, ran_here=True)
        if report.ok:
            self._set_success(result, ran_here=True)
        return report

    def _observe(self, result: dict[str, Any], ran_here: bool = False) -> None:
        if not ran_here and self.newest is not None and _order(result) < _order(self.newest):
            return
        self.newest = result
        if not self.guard.elector.is_leader():
            return  # the leader alerts (it runs the drills)
        marker = result.get("record") or result.get("finished_at")
        if marker == self._alerted:
            return
        self._alerted = marker
        restored = (result.get("restored") or result.get("newest") or {}).get("id")
        if result.get("ok"):
            self.guard.alerts.resolve(
                ALERT, f"restore drill passed: backup {restored} restored into a scratch store, "
                f"{result.get('total', 0)} memories verified in "
                f"{result.get('durations', {}).get('total_s', 0)}s")
        else:
            self.guard.alerts.fire(
                ALERT, f"restore drill failed: {result.get('error')}",
                {"backup": restored or "none", "drilled_at": result.get("finished_at"),
                 "hint": result.get("hint") or "run `memvault drill` and read its report"})

    def _set_success(self, result: dict[str, Any], ran_here: bool = False) -> None:
        """The gauge follows the newest success by seq; a stamp ahead of this clock reads as
        now (when this process learned of it), never as a future year."""
        order = _order(result)
        if not ran_here and self._success_order is not None and order <= self._success_order:
            return
        self._success_order = order
        now = self.guard.clock.wall().timestamp()
        self._success_at = min(_parse(result["finished_at"]).timestamp(), now)
        self.gauge.set(self._success_at)

    def status(self) -> dict[str, Any]:
        return {"interval_s": self.settings.drill_interval, "newest": self.newest,
                "last_success_at": (datetime.fromtimestamp(self._success_at, UTC).isoformat()
                                    if self._success_at else None),
                "due_in_s": round(self.seconds_until_due(), 1), "problems": self.problems}


def _order(result: dict[str, Any]) -> tuple[Any, ...]:
    """Records sort by (seq, stamp) of their key; a result never recorded sorts by the seq it
    restored to."""
    if result.get("record"):
        name = name_of(str(result["record"]))
        return (name.seq, name.stamp)
    return (int((result.get("journal") or {}).get("upto_seq") or -1), "")
