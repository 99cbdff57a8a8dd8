"""The watchdog: checks the store against what the backup destinations know, at startup
(before the server accepts requests) and every few seconds after; fires and resolves alerts,
keeps the ledger current, and restores an empty store from the newest valid backup of the
lineage it replaces (MEMVAULT_AUTO_RESTORE=empty). On PostgreSQL only the elected leader writes
the ledger, restores and sends alerts; every replica checks. The guard and the backup scheduler
it reports on share one elector (built by memvault/runtime.py), so the process whose scheduler
runs the backups is the one that alerts on them.
"""


from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Gauge

from memvault.backup.destinations import open_destinations
from memvault.backup.restore import INCOMPLETE_KEY
from memvault.guard.alerts import Alert, AlertManager
from memvault.guard.backup_health import BackupHealth
from memvault.guard.checks import (
    HOLDING,
    Finding,
    Observation,
    Verdict,
    assess,
    clock_skew,
    ledger_unknown,
    several_candidates,
    unreachable,
    writer_conflict,
)
from memvault.guard.clock import SYSTEM, Clock
from memvault.guard.digest import DIGEST_MIN_UPTIME_SECONDS, digest_text, send_digest
from memvault.guard.drift import ConfigDrift
from memvault.guard.forks import foreign_writers, journal_forks
from memvault.guard.ledger import (
    LedgerRecord,
    LedgerUnavailable,
    observe,
    write_ledger,
)
from memvault.guard.lineages import Known, LivenessWatch, Survey, choose, survey
from memvault.guard.probe import EmbedderProbe
from memvault.periodic import Periodic
from memvault.store.writer_lock import file_swap, sqlite_path

if TYPE_CHECKING:
    from memvault.backup.scheduler import BackupScheduler
    from memvault.config import Settings
    from memvault.memory import Memory
    from memvault.store.leader import LeaderElector

log = logging.getLogger("memvault.guard")

TICK_SECONDS = 5.0
LEDGER_EVERY_SECONDS = 60.0  # an unchanged-lineage ledger record at most this often
LEDGER_REREAD_SECONDS = 60.0  # pick up `memvault adopt` / other replicas' records
RESTORE_RETRY_SECONDS = 300.0
PROBE_EVERY_SECONDS = 300.0  # an HTTP embedder is asked its probe texts again this often


def read_observation(memory: Memory) -> Observation:
    store = memory.store
    meta = store.meta()
    return Observation(store_id=meta.store_id, lineage_id=meta.lineage_id, backend=meta.backend,
                       location=meta.location, active_embedder=meta.active_embedder,
                       seq=store.last_seq(), namespaces=store.counts(),
                       restored_from=store.get_meta("restored_from"),
                       restore_incomplete=store.get_meta(INCOMPLETE_KEY))


class DrillView(Protocol):
    """What the guard reads of the drill job beside it (memvault/guard/drill_job.py)."""

    newest: dict[str, Any] | None

    def status(self) -> dict[str, Any]: ...


class Guard:
    """`elector` decides whether this process leads (alerts, ledger, restores); one passed in
    is shared with the other jobs and started / stopped by its owner, without one the guard
    elects for itself. `scheduler` is the backup scheduler of this process, whose runs the
    guard reports on (BackupFailing, BackupInvalid, BackupStale, JournalLag) and whose lineage
    it checks for forks; None where this process runs no backups."""

    def __init__(self, settings: Settings, memory: Memory, *,
                 elector: LeaderElector | None = None,
                 scheduler: BackupScheduler | None = None,
                 tick_seconds: float = TICK_SECONDS,
                 probe_seconds: float = PROBE_EVERY_SECONDS,
                 clock: Clock = SYSTEM) -> None:
        from memvault.store.leader import JOBS_ELECTION, make_leader_elector

        self.settings = settings
        self.memory = memory
        self.tick_seconds = tick_seconds
        self.clock = clock
        # A lineage's writer is alive when its head's beat moves; one that ships every
        # journal interval moves within two of them (plus a tick of this guard).
        self.watch = LivenessWatch(2 * settings.journal_interval + tick_seconds, clock.mono)
        self.known: Known | None = None
        self.survey: Survey | None = None
        self.conflicts: list[str] = []
        self.registry = CollectorRegistry()
        self.identity_ok = Gauge("memvault_store_identity_ok", "1 when the store is the one "
                                 "the ledger knows (not empty, replaced or rolled back).",
                                 registry=self.registry)
        self.alerts = AlertManager([u.get_secret_value() for u in settings.alert_urls],
                                   registry=self.registry, instance=f"memvault {settings.host}:"
                                   f"{settings.port}")
        self.destinations = open_destinations(settings)
        self._owns_elector = elector is None
        self.elector = elector if elector is not None else make_leader_elector(
            settings, JOBS_ELECTION)
        self.scheduler = scheduler
        self.ledger: LedgerRecord | None = None
        self.ledger_problems: list[str] = []
        self.verdict: Verdict | None = None
        self.checked_at: str | None = None
        self.restore: dict[str, Any] = {}
        self._ledger_read_at = 0.0
        self._ledger_written_at = 0.0
        self._restore_tried_at = 0.0
        self._lock = threading.Lock()
        self._loop = Periodic("memvault-guard", self._tick, lambda: self.tick_seconds,
                              first_wait=self._first_wait)
        self._restoring = False
        self.drill: DrillView | None = None  # beside this guard in `serve`, set by its runtime
        self._digest_day: str | None = None
        self._created_at = clock.mono()
        self.backups = BackupHealth(settings, self.destinations, clock)
        self.probe = EmbedderProbe(settings, memory, probe_seconds, clock.mono())
        self.config_drift = ConfigDrift(settings, self.registry)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._owns_elector:
            self.elector.start()
        # The first check runs before the server accepts requests, so readiness is right from
        # the start; a restore it calls for runs in the watchdog thread, while the server
        # already answers /livez and /readyz (503).
        self.check(restore=False)
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        self._final_record()
        if self._owns_elector:
            self.elector.stop()

    def _first_wait(self) -> float:
        return 0.0 if self._wants_restore(self.verdict) else self.tick_seconds

    def _tick(self) -> None:
        self.check()

    # ------------------------------------------------------------------ one pass

    def check(self, restore: bool = True) -> Verdict:
        with self._lock:
            verdict = self._check()
            self.verdict = verdict
            self.checked_at = self.clock.wall().isoformat()
        if restore and self._wants_restore(verdict):
            self._auto_restore()
            with self._lock:
                verdict = self.verdict = self._check()
        return verdict

    def _check(self) -> Verdict:
        try:
            obs = read_observation(self.memory)
        except Exception as exc:
            finding = unreachable(f"{type(exc).__name__}: {exc}")
            self.alerts.fire(finding.alert, finding.summary, finding.details)
            self.identity_ok.set(0)
            return Verdict([finding])
        swapped = self._file_swapped()
        if swapped is not None:
            self._announce(swapped)
            self.identity_ok.set(0)
            return Verdict([swapped])
        now = self.clock.mono()
        # Re-read every minute, and at every check while the store is refused or the guard
        # cannot decide yet (an `adopt` from the CLI then takes effect within one check).
        was_refused = self.verdict is not None and any(
            f.alert in HOLDING for f in self.verdict.firing())
        known = self.known
        if known is None or now - self._ledger_read_at > LEDGER_REREAD_SECONDS \
                or was_refused or known.pending or known.unknown or known.unreadable:
            self._reread(obs, now)
        verdict = self._judge(obs)
        drift = self.probe.drift(obs, now)
        if drift is not None:
            verdict.findings = [f for f in verdict.findings if f.alert != Alert.EmbedderMismatch]
            verdict.findings.append(drift)
        # A store holding vectors of another model (switched by `memvault reembed` after this
        # process checked it, or a model swapped behind the name) takes no write and answers
        # no search from this process: its vectors would be unsearchable or its ranking wrong.
        mismatch = next((f for f in verdict.firing() if f.alert == "EmbedderMismatch"), None)
        self.memory.refuse_embedder(mismatch.summary if mismatch and obs.total else None)
        verdict.findings += self._backup_findings(obs)
        verdict.findings.append(self._clock_skew())
        for finding in verdict.findings:
            self._announce(finding, verdict.note)
        refused = verdict.refusing_data()
        self.identity_ok.set(0 if refused else 1)
        if verdict.accept and self.elector.is_leader():
            self._record(obs, verdict, now)
        if self.elector.is_leader() and now - self._created_at > DIGEST_MIN_UPTIME_SECONDS:
            self._maybe_digest(obs, verdict)
        return verdict

    def _file_swapped(self) -> Finding | None:
        """The SQLite file deleted or replaced under this process (its connection still reads
        the old inode): refused at once, and never shipped or backed up as the lineage."""
        store = self.memory.store
        path = sqlite_path(store)
        swap = file_swap(path, getattr(store, "opened_as", None)) if path else None
        if swap is None:
            return None
        return Finding(Alert.StoreUnreachable if swap.deleted else Alert.StoreReplaced, True,
                       swap.summary, {"file_swapped": True, "hint": (
                           "put the store file back (or restore it: `memvault restore latest "
                           "--dry-run`), then restart memvault; writes are refused until then")})

    def _reread(self, obs: Observation, now: float) -> None:
        """What the destinations know: every lineage, the one to compare with, forks."""
        try:
            found = survey(self.destinations, obs.lineage_id)
        except LedgerUnavailable as exc:
            # "No ledger" would be unknown, not a first start: never record this store as the
            # guarded one on that basis; the next check reads again.
            log.error("%s", exc)
            self.ledger_problems = [exc.message]
            if self.known is None:
                self.known = Known(None, Finding(Alert.DestinationShared, False, "unknown"),
                                   unreadable=exc.message)
            return
        self.survey = found
        self.known = choose(obs, found, self.watch)
        self.ledger = self.known.ledger
        self.config_drift.compare(self.ledger)
        self.ledger_problems = found.problems
        self._ledger_read_at = now
        self.backups.refresh(obs.lineage_id)
        self.conflicts = self._forks(obs, found)

    def _judge(self, obs: Observation) -> Verdict:
        known = self.known
        verdict = assess(obs, self.ledger, self._configured_embedder(),
                         self.settings.alert_drop_ratio, self.clock.wall())
        self.config_drift.annotate(verdict)
        if known is None:
            return verdict
        if known.pending or known.unknown or (known.unreadable and self.ledger is None):
            verdict.accept = None
        if known.unknown and self.ledger is None:
            unknown = ledger_unknown(obs, known.unknown)
            if unknown is not None:
                verdict.findings = [f for f in verdict.findings if f.alert != unknown.alert]
                verdict.findings.append(unknown)
        if known.ambiguous:
            several = several_candidates(obs, [(st.lineage_id, st.writer())
                                               for st in known.ambiguous])
            verdict.findings = [f for f in verdict.findings if f.alert != several.alert]
            verdict.findings.append(several)
            verdict.accept = None
        verdict.findings.append(known.shared)
        verdict.findings.append(writer_conflict(obs, self.conflicts))
        return verdict

    def _forks(self, obs: Observation, found: Survey) -> list[str]:
        """Another writer in this store's lineage (see guard/forks.py); only a process that
        ships the lineage itself can be in conflict with one."""
        scheduler = self.scheduler
        if scheduler is None or not scheduler.is_leader():
            return []
        secret = self.settings.backup_encryption_key
        restored = (obs.restored_from or {}).get("replayed_upto") or 0
        return foreign_writers(found.lineages.get(obs.lineage_id), self.watch) + journal_forks(
            self.memory.store, obs.lineage_id, self.destinations,
            secret.get_secret_value() if secret else None, int(restored))

    def _clock_skew(self) -> Finding:
        """Stamps ahead of this clock in what the guard reads (ledger, newest backup by seq,
        newest drill by seq)."""
        stamps: list[tuple[str, str]] = []
        if self.ledger is not None and self.ledger.event != "from-backup":
            stamps.append((f"the ledger record of lineage {self.ledger.lineage_id} at seq "
                           f"{self.ledger.seq}", self.ledger.observed_at))
        if self.backups.newest is not None:
            seq, created, backup_id = self.backups.newest
            stamps.append((f"backup {backup_id} (seq {seq})", created))
        newest_drill = self.drill.newest if self.drill is not None else None
        if newest_drill and newest_drill.get("finished_at"):
            stamps.append((f"the drill record {newest_drill.get('record')}",
                           str(newest_drill["finished_at"])))
        return clock_skew(self.clock.wall(), stamps)

    def _maybe_digest(self, obs: Observation, verdict: Verdict,
                      now: datetime | None = None) -> bool:
        """The daily digest (guard/digest.py), composed from what this guard knows."""
        if self._digest_day == (now or self.clock.wall()).strftime("%Y-%m-%d"):
            return False

        def compose() -> tuple[str, str]:
            return digest_text(obs, verdict, self.ledger, self.alerts.status(),
                               self.drill.status() if self.drill is not None else None,
                               self.backups.newest_valid_at)

        sent, self._digest_day = send_digest(self.destinations, self.alerts, compose,
                                             bool(self.settings.alert_urls), now,
                                             lineage_id=obs.lineage_id, seq=obs.seq)
        return sent

    def _announce(self, finding: Finding, note: str | None = None) -> None:
        """Fire or resolve the finding's alert. With several replicas on one PostgreSQL, the
        leader speaks for the store (one notification, not one per replica); every replica
        says it when it cannot reach the store itself (it may be the only one that cannot)."""
        if finding.alert != Alert.StoreUnreachable and not self.elector.is_leader():
            return
        if finding.firing:
            self.alerts.fire(finding.alert, finding.summary, finding.details)
        else:
            self.alerts.resolve(finding.alert, note or finding.summary)

    def _backup_findings(self, obs: Observation) -> list[Finding]:
        """Backup health as the leader's scheduler in this process sees it (other replicas
        leave these alerts to the leader)."""
        scheduler = self.scheduler
        if scheduler is None or not scheduler.is_leader():
            return []
        return self.backups.findings(scheduler)

    def _final_record(self) -> None:
        """On shutdown the ledger gets the store's last state (as the journal gets its last
        segment): the next start compares against it, not a minute-old record."""
        try:
            with self._lock:
                verdict = self.verdict
                if verdict is None or not verdict.accept or not self.elector.is_leader():
                    return
                final = Verdict(verdict.findings, accept="observed" if self.ledger else
                                verdict.accept)
                self._record(read_observation(self.memory), final, self.clock.mono(),
                             force=True)
        except Exception:
            log.exception("writing the final ledger record failed")

    def _record(self, obs: Observation, verdict: Verdict, now: float,
                force: bool = False) -> None:
        event = verdict.accept or "observed"
        previous = self.ledger
        config = self.config_drift.current.to_json()
        changed = previous is None or event != "observed" or previous.event == "from-backup" \
            or verdict.restored is not None or (
            obs.lineage_id, obs.store_id, obs.active_embedder, config) != (
            previous.lineage_id, previous.store_id, previous.active_embedder, previous.config)
        moved = previous is None or obs.seq != previous.seq or obs.total != previous.memories
        if not force and not changed and (
                not moved or now - self._ledger_written_at < LEDGER_EVERY_SECONDS):
            return
        record = observe(previous, lineage_id=obs.lineage_id, store_id=obs.store_id,
                         backend=obs.backend, location=obs.location,
                         active_embedder=obs.active_embedder, seq=obs.seq,
                         namespaces=obs.namespaces, event=event, note=verdict.note,
                         restored=verdict.restored, now=self.clock.wall(), config=config)
        problems = write_ledger(self.destinations, record)
        if len(problems) < len(self.destinations):
            self.ledger = record
            self._ledger_written_at = now
            if event != "observed":
                log.warning("ledger: %s store %s of lineage %s%s", event, obs.store_id,
                            obs.lineage_id, f" ({verdict.note})" if verdict.note else "")

    def _configured_embedder(self) -> str | None:
        try:
            return str(self.memory.embedder.identity().key)
        except Exception:  # an unreachable embedder is the readiness check's to report
            return None

    # ------------------------------------------------------------------ auto-restore

    def restore_lineage(self) -> str | None:
        """The lineage an empty store is restored from: its own (an unfinished restore), or the
        one gone lineage with data it replaces; never a live one, never one of several."""
        known = self.known
        if known is None or known.pending or known.unknown or known.unreadable \
                or known.ambiguous:
            return None
        if known.restore_lineage:
            return known.restore_lineage
        return known.ledger.lineage_id if known.ledger is not None else None

    def _wants_restore(self, verdict: Verdict | None) -> bool:
        if verdict is None:
            return False
        empty = any(f.alert == Alert.StoreEmpty and f.firing for f in verdict.findings)
        return (empty and self.settings.auto_restore == "empty"
                and self.restore_lineage() is not None
                and self.clock.mono() - self._restore_tried_at > RESTORE_RETRY_SECONDS
                and self.elector.is_leader())

    def _auto_restore(self) -> None:
        from memvault.backup.restore import run_restore

        lineage = self.restore_lineage()
        self._restore_tried_at = self.clock.mono()
        self._restoring = True
        started = self.clock.wall().isoformat()
        log.warning("the store is empty where the ledger knows data: restoring the newest valid "
                    "backup of lineage %s (MEMVAULT_AUTO_RESTORE=empty)", lineage)
        try:
            # What can be brought back is restored (an empty store serves nothing); what
            # cannot is named to a person below, never passed over.
            ledger = self.known.ledger if self.known is not None else None
            high_water = ledger.seq if ledger is not None and ledger.lineage_id == lineage \
                else None
            report = run_restore(self.memory.store, self.settings, self.memory.embedder,
                                 "latest", destinations=self.destinations, lineage=lineage,
                                 high_water=high_water, allow_loss=True)
        except Exception as exc:
            self._restoring = False
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.error("automatic restore failed: %s", message)
            self.restore = {"started_at": started, "ok": False, "error": message}
            self.alerts.fire(Alert.StoreEmpty, f"the store is empty and the automatic restore "
                             f"failed: {message}", {"hint": "run `memvault restore latest "
                                                    "--dry-run` to see why"})
            return
        self._restoring = False
        self.memory.recheck_embedder()  # the restore may have set the store's active embedder
        self.restore = {"started_at": started, "ok": True, **report.to_json()}
        log.warning("automatic restore done: %s", report.to_json())
        loss = report.plan.loss
        if loss.lost:
            self.alerts.notify("memvault: automatic restore WITH LOSS",
                               f"the empty store was restored from backup "
                               f"{report.plan.manifest.id} of lineage {lineage}, but "
                               f"{loss.describe()}. `memvault backup verify --all --read-data` "
                               "shows what is damaged or missing.")

    def backup_hold(self) -> str | None:
        """Why the backup scheduler must wait (its `hold`): until the first check, while
        restoring, and while the store is not the guarded one."""
        if self._restoring:
            return "the guard is restoring the store"
        verdict = self.verdict
        if verdict is None:
            return "the guard has not checked the store yet"
        refused = [f.alert for f in verdict.firing()
                   if f.alert in HOLDING and not f.details.get("file_swapped")]
        return f"the store is not the guarded one ({', '.join(refused)})" if refused else None

    # ------------------------------------------------------------------ reporting

    def status(self) -> dict[str, Any]:
        verdict = self.verdict
        return {
            "checked_at": self.checked_at,
            "leader": self.elector.is_leader(),
            "ledger": self.ledger.to_json() if self.ledger else None,
            "ledger_problems": self.ledger_problems,
            "findings": [{"alert": f.alert, "firing": f.firing, "summary": f.summary}
                         for f in (verdict.findings if verdict else [])],
            "alerts": self.alerts.status(),
            "auto_restore": self.settings.auto_restore,
            "last_restore": self.restore or None,
            "drill": self.drill.status() if self.drill is not None else None,
            "lineages": self.lineages_status(),
            "deciding": self.known.pending if self.known else None,
            "ledger_unknown": self.known.unknown if self.known else None,
            "writer_conflicts": self.conflicts,
            "config_drift": self.config_drift.report,
        }

    def lineages_status(self) -> list[dict[str, Any]]:
        found = self.survey
        if found is None:
            return []
        return [{"lineage_id": st.lineage_id, "writer": st.writer(),
                 "liveness": self.watch.liveness(st).value, "has_data": st.has_data,
                 "listed_in": sorted(st.listed_in), "named_in": sorted(st.named_in),
                 "seq": st.record.seq if st.record else None,
                 "memories": st.record.memories if st.record else None}
                for st in found.lineages.values()]

