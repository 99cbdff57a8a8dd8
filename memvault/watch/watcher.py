"""`memvault watch mem0`: guard a running mem0 pgvector collection in place.

The watcher mirrors mem0's table into a memvault store of its own (watch/capture.py) and runs
memvault's own backup scheduler on that mirror: snapshots in the open format, validated by
read-back, journal segments shipped every MEMVAULT_JOURNAL_INTERVAL, retention. The ledger of
the watched lineage (mem0's cluster, database and table, vector dimension, counts per
namespace, journal seq) is written with the backups like memvault's own (guard/ledger.py).
Every tick it checks mem0's table against that ledger (watch/checks.py) and alerts through
the AlertManager; while an emptied, replaced or re-dimensioned table is seen, nothing is
captured, snapshotted or recorded, so the good backups and the mirror stay as they were.

It never writes mem0's table: its sessions are read-only on the server's side.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge

from memvault.backup.destinations import open_destinations
from memvault.backup.scheduler import BackupScheduler
from memvault.errors import MemvaultError
from memvault.guard.alerts import Alert, AlertManager
from memvault.guard.backup_health import BackupHealth
from memvault.guard.checks import Finding, Verdict
from memvault.guard.clock import SYSTEM, Clock
from memvault.guard.ledger import (
    LedgerRecord,
    LedgerUnavailable,
    observe,
    read_ledger,
    write_ledger,
)
from memvault.periodic import Periodic
from memvault.store import MetaKey
from memvault.store.writer_lock import hold_writer_lock
from memvault.watch.capture import Capture, Mirror
from memvault.watch.checks import HOLDING, WATCHED, TableObservation, assess_table
from memvault.watch.lineage import BACKEND, watched_lineages
from memvault.watch.payload import mem0_identity, record_of
from memvault.watch.table import Fingerprint, NotMem0Table, Unreachable, WatchedTable, tried

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.store import Store
    from memvault.watch.table import TableIdentity

log = logging.getLogger("memvault.watch")

TICK_SECONDS = 5.0
LEDGER_EVERY_SECONDS = 60.0


def mirror_path(settings: Settings, collection: str) -> Path:
    """Where the mirror of `collection` lives: in the data dir, one file per collection."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", collection)
    return Path(settings.data_dir) / "watch" / f"mem0-{safe}.db"


class Watcher:
    def __init__(self, settings: Settings, dsn: str, collection: str = "memories", *,
                 tick_seconds: float = TICK_SECONDS, adopt: bool = False,
                 clock: Clock = SYSTEM) -> None:
        from memvault.store.sqlite import SQLiteStore

        self.settings = settings
        self.collection = collection
        self.tick_seconds = tick_seconds
        self.clock = clock
        self.table = WatchedTable(dsn, collection)
        self.store: Store = SQLiteStore(mirror_path(settings, collection),
                                        timeout=settings.db_timeout)
        try:  # one writer of the mirror: a second watcher of it exits naming the first
            self.writer_lock = hold_writer_lock(self.store, "memvault watch mem0")
        except BaseException:
            self.store.close()
            raise
        path = mirror_path(settings, collection)
        self.mirror = Mirror(self.store, collection, path.with_suffix(".versions.json"))
        self.registry = CollectorRegistry()
        self.alerts = AlertManager([u.get_secret_value() for u in settings.alert_urls],
                                   registry=self.registry,
                                   instance=f"memvault watch mem0 ({collection})")
        self.identity_ok = Gauge("memvault_store_identity_ok", "1 when mem0's table is the one "
                                 "the ledger knows (not empty, replaced or re-dimensioned).",
                                 registry=self.registry)
        self.memories = Gauge("memvault_memories", "Memories per namespace in mem0's table "
                              "(as last captured).", ["namespace"], registry=self.registry)
        self.capture_seconds = Gauge("memvault_watch_capture_seconds", "Wall time of the last "
                                     "change capture.", registry=self.registry)
        self.destinations = open_destinations(settings)
        self.scheduler = BackupScheduler(self.store, settings, hold=self.hold,
                                         destinations=self.destinations)
        self.backups = BackupHealth(settings, self.destinations, clock)
        self.adopt = adopt
        self.ledger: LedgerRecord | None = None
        self.ledger_problems: list[str] = []
        self.verdict: Verdict | None = None
        self.identity: TableIdentity | None = None
        self.last_capture: Capture | None = None
        self.checked_at: str | None = None
        self._fingerprint: Fingerprint | None = None  # as of the last capture
        self._fingerprint_seen: Fingerprint | None = None  # as of the last check
        self._compared: tuple[tuple[str, Fingerprint | None], bool] | None = None
        self._ledger_read_at: float | None = None
        self._ledger_written_at = 0.0
        self._lock = threading.Lock()
        self._loop = Periodic("memvault-watch", self._tick, lambda: self.tick_seconds,
                              first_wait=0.0)
        self.captured = False  # the first look at mem0's table is done
        self.scheduler_started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """The first check runs before anything else (alerts at start, before the sidecar
        listens); the first look at every row, which takes a while at 100k, runs as the watch
        loop's first step, and the backup scheduler starts after it."""
        self.check(capture=False)
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        self.scheduler.stop()  # ships the final journal segment
        self.scheduler.shipper.stop()
        self._final_record()
        self.mirror.save_versions()

    def close(self) -> None:
        self.table.close()
        if self.writer_lock is not None:
            self.writer_lock.release()
            self.writer_lock = None
        self.store.close()

    def _tick(self) -> None:
        self.check()
        if not self.scheduler_started:  # after the first look: the first snapshot holds it
            self.scheduler_started = True
            self.scheduler.start()

    # ------------------------------------------------------------------ one check

    def check(self, capture: bool = True) -> Verdict:
        with self._lock:
            verdict = self._check(capture)
            self.verdict = verdict
            self.checked_at = self.clock.wall().isoformat()
            for finding in verdict.findings:
                self._announce(finding)
            self.identity_ok.set(0 if any(f.alert in HOLDING for f in verdict.firing()) else 1)
            return verdict

    def _check(self, capture: bool = True) -> Verdict:
        try:
            identity = self.table.identity()
            fingerprint = self.table.fingerprint() if identity.table_oid else Fingerprint(0, 0)
        except (Unreachable, NotMem0Table) as exc:
            log.error("mem0's table cannot be read (tried %s): %s", tried(self.table.dsn),
                      exc.message)
            return Verdict([Finding(Alert.StoreUnreachable, True, exc.message, {
                "tried": tried(self.table.dsn), "hint": exc.hint or "check --dsn"})])
        self.identity = identity
        if identity.table_oid and identity.dims is None:
            why = (f"{self.collection}'s vector column has no dimension (not vector(N)): the "
                   "watcher cannot tell mem0's model from it and does not guard the table")
            log.error("%s", why)
            return Verdict([Finding(Alert.StoreUnreachable, True, why, {
                "hint": "mem0 creates vector(N); is --collection mem0's table?"})])
        now = self.clock.mono()
        holding = self.verdict is not None and any(f.alert in HOLDING
                                                   for f in self.verdict.firing())
        if self._ledger_read_at is None or holding or \
                now - self._ledger_read_at > LEDGER_EVERY_SECONDS:
            self._read_ledger(now)
        self._fingerprint_seen = fingerprint
        obs = TableObservation(identity, fingerprint.count, self.collection)
        same = self._same_content(obs)
        known = self.ledger or self._mirror_record() or self._predecessor()
        verdict = assess_table(obs, known, self.settings.alert_drop_ratio, self.clock.wall(),
                               same_content=same)
        if known is not None and self.ledger is None and verdict.accept:
            verdict.note = verdict.note or (f"continues lineage {known.lineage_id} (this "
                                            "watcher's mirror was new)")
        if self.adopt:
            verdict = Verdict([Finding(name, False, "adopted") for name in WATCHED],
                              accept="adopted", note=f"adopted {identity.describe()} by "
                              "`memvault watch mem0 --adopt`")
        failed: Finding | None = None
        if capture and not any(f.alert in HOLDING for f in verdict.firing()) and identity.dims:
            try:
                self._capture(identity, fingerprint)
            except Unreachable as exc:  # lost mem0 between the check and the capture
                failed = Finding(Alert.StoreUnreachable, True, exc.message,
                                 {"tried": tried(self.table.dsn), "hint": exc.hint or ""})
            except Exception as exc:  # the mirror: the backups cannot be kept current
                log.exception("change capture into the mirror failed")
                failed = Finding(Alert.BackupFailing, True, f"change capture into the "
                                 f"watcher's mirror failed: {type(exc).__name__}: {exc}", {
                                     "hint": "check the data dir (disk full? permissions?); "
                                     "the log has the traceback"})
            else:
                if verdict.accept and self._ledger_known():
                    self._record(identity, verdict)
                    self.adopt = False
        verdict.findings += self.backups.findings(self.scheduler)
        if failed is not None:
            verdict.findings = [f for f in verdict.findings if f.alert != failed.alert]
            verdict.findings.append(failed)
        return verdict

    def _capture(self, identity: TableIdentity, fingerprint: Fingerprint) -> None:
        assert identity.dims is not None
        active = self.store.meta().active_embedder
        # The column's dimension changed and the ledger accepted it (a restore into mem0 with
        # re-embedding wrote it): every vector is read anew.
        revector = self.store.total() > 0 and active is not None and \
            active != mem0_identity(self.collection, identity.dims).key
        if fingerprint == self._fingerprint and not revector:
            return
        result = self.mirror.capture(self.table, identity.dims, revector=revector)
        self.captured = True
        self.last_capture = result
        self.capture_seconds.set(result.seconds)
        self._fingerprint = fingerprint
        if self.store.meta().store_id != identity.store_id:
            self.store.set_meta(MetaKey.STORE_ID, identity.store_id)
        self.memories.clear()
        for namespace, count in self.store.counts().items():
            self.memories.labels(namespace=namespace).set(count)
        for problem in result.skipped:
            log.error("a mem0 row could not be kept: %s", problem)

    def _same_content(self, obs: TableObservation) -> bool:
        """A table of another identity holding exactly the mirror's memories (moved)."""
        ledger = self.ledger
        if ledger is None or obs.identity.same_place(ledger.store_id) or not obs.total \
                or obs.total != self.store.total():
            return False
        # Compared once per table state, not every tick (every payload is read).
        key = (obs.identity.store_id, self._fingerprint_seen)
        if self._compared is not None and self._compared[0] == key:
            return self._compared[1]
        same = True
        for row in self.table.rows(list(self.table.versions()), vectors=False):
            current = self.store.get(row.id)
            if not isinstance(row.payload, dict) or current != record_of(row.id, row.payload):
                same = False
                break
        self._compared = (key, same)
        return same

    # ------------------------------------------------------------------ the ledger

    def _predecessor(self) -> LedgerRecord | None:
        """A new mirror (its volume lost, e.g. with mem0's in `docker compose down -v`)
        compares mem0's table with the one lineage a previous watcher of this table left."""
        if not self._ledger_known():
            return None
        own = self.store.meta().lineage_id
        try:
            others = [lin for lin in watched_lineages(self.destinations, self.collection)
                      if lin != own]
            if len(others) != 1:
                return None
            record, _ = read_ledger(self.destinations, others[0])
        except MemvaultError as exc:
            log.error("cannot read the lineages in the backup destinations: %s", exc)
            return None
        return record

    def _mirror_record(self) -> LedgerRecord | None:
        """What the mirror itself knows, when the destinations hold no ledger (or cannot be
        read): an emptied table must never be captured into the mirror as a first look."""
        meta = self.store.meta()
        seq, counts = self.store.last_seq(), self.store.counts()
        if not seq and not counts:
            return None
        return LedgerRecord(lineage_id=meta.lineage_id, store_id=meta.store_id,
                            backend=BACKEND, location=str(mirror_path(self.settings,
                                                                      self.collection)),
                            active_embedder=meta.active_embedder, seq=seq,
                            memories=sum(counts.values()), namespaces=counts,
                            observed_at=self.clock.wall().isoformat(), event="from-backup",
                            note="the watcher's mirror (no ledger record was read)")

    def _ledger_known(self) -> bool:
        return self._ledger_read_at is not None

    def _read_ledger(self, now: float) -> None:
        lineage = self.store.meta().lineage_id
        try:
            record, problems = read_ledger(self.destinations, lineage)
        except LedgerUnavailable as exc:
            log.error("%s", exc)
            self.ledger_problems = [exc.message]
            return
        self.ledger, self.ledger_problems = record, problems
        self._ledger_read_at = now
        self.backups.refresh(lineage)

    def _record(self, identity: TableIdentity, verdict: Verdict, force: bool = False) -> None:
        meta = self.store.meta()
        previous = self.ledger
        event = verdict.accept or "observed"
        seq, counts = self.store.last_seq(), self.store.counts()
        changed = previous is None or event != "observed" or verdict.note is not None or (
            previous.store_id, previous.active_embedder) != (identity.store_id,
                                                             meta.active_embedder)
        moved = previous is None or seq != previous.seq or sum(counts.values()) != \
            previous.memories
        now = self.clock.mono()
        if not force and not changed and (not moved or
                                          now - self._ledger_written_at < LEDGER_EVERY_SECONDS):
            return
        record = observe(previous, lineage_id=meta.lineage_id, store_id=identity.store_id,
                         backend=BACKEND, location=f"{self.table.location} "
                         f"({identity.describe()})", active_embedder=meta.active_embedder,
                         seq=seq, namespaces=counts, event=event, note=verdict.note,
                         now=self.clock.wall())
        problems = write_ledger(self.destinations, record)
        if len(problems) < len(self.destinations):
            self.ledger = record
            self._ledger_written_at = now
            if event != "observed" or verdict.note:
                log.warning("ledger: %s mem0 table %s%s", event, identity.describe(),
                            f" ({verdict.note})" if verdict.note else "")

    def _final_record(self) -> None:
        try:
            with self._lock:
                verdict, identity = self.verdict, self.identity
                if verdict is None or identity is None or not verdict.accept \
                        or not self._ledger_known():
                    return
                self._record(identity, Verdict(verdict.findings, accept="observed"),
                             force=True)
        except Exception:
            log.exception("writing the final ledger record failed")

    # ------------------------------------------------------------------ reporting

    def _announce(self, finding: Finding) -> None:
        if finding.firing:
            self.alerts.fire(finding.alert, finding.summary, finding.details)
        else:
            self.alerts.resolve(finding.alert, finding.summary)

    def hold(self) -> str | None:
        """Why the backup scheduler must wait: before the first check, and while mem0's
        table is not the guarded one."""
        verdict = self.verdict
        if verdict is None:
            return "the watcher has not checked mem0's table yet"
        if not self.captured and self.store.total() == 0:
            return "the watcher's first look at mem0's table is not done yet"
        refused = [f.alert for f in verdict.firing() if f.alert in HOLDING]
        return f"mem0's table is not the guarded one ({', '.join(refused)})" if refused \
            else None

    def ready(self) -> list[dict[str, Any]]:
        """The failing readiness checks (empty: ready)."""
        verdict = self.verdict
        if verdict is None:
            return [{"name": "watch", "ok": False, "message": "not checked yet"}]
        return [{"name": f.alert, "ok": False, "message": f.summary}
                for f in verdict.firing() if f.alert in HOLDING]

    def status(self) -> dict[str, Any]:
        verdict = self.verdict
        meta = self.store.meta()
        return {
            "watching": {"location": self.table.location, "collection": self.collection,
                         "identity": self.identity.describe() if self.identity else None,
                         "store_id": self.identity.store_id if self.identity else None},
            "checked_at": self.checked_at,
            "mirror": {"path": str(mirror_path(self.settings, self.collection)),
                       "lineage_id": meta.lineage_id, "seq": self.store.last_seq(),
                       "counts": self.store.counts(), "embedder": meta.active_embedder},
            "last_capture": self.last_capture.to_json() if self.last_capture else None,
            "ledger": self.ledger.to_json() if self.ledger else None,
            "ledger_problems": self.ledger_problems,
            "findings": [{"alert": f.alert, "firing": f.firing, "summary": f.summary}
                         for f in (verdict.findings if verdict else [])],
            "alerts": self.alerts.status(),
            "backups": self.scheduler.status(),
        }
