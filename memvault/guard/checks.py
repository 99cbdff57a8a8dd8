"""What the guard concludes from the store as it is and the ledger: one finding per alert.

Pure functions of their inputs (the store is read once into an `Observation`), so every verdict
is testable without timing. The rules:
- same lineage, journal seq at or past the ledger's: the store is the one we know; a fall in
  memories beyond MEMVAULT_ALERT_DROP_RATIO of the last 24h's peak is MemoryCountDrop (deletes
  are journaled, so this is a warning, not a refusal);
- same lineage, seq behind the ledger's: rolled back outside memvault (an old dump restored
  over it) -> StoreReplaced, unless memvault itself restored it: the store's restore marker
  names a restore the ledger has not accepted yet, and the store's seq is exactly where that
  restore left it (`replayed_upto`). No clock is compared: a restore run with the clock ahead
  and a copy put back after the correction is still a rollback;
- another lineage: StoreReplaced when it holds memories, StoreEmpty when it is empty (a new
  empty database where the ledger knows data: the incident in PRODUCT.md);
- EmbedderMismatch: the configured embedder is not the one that made the lineage's vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from memvault.backup.clock import seconds_ahead
from memvault.backup.format import not_valid
from memvault.guard.alerts import Alert
from memvault.guard.ledger import LedgerRecord, restore_id

# Which alerts stop what: each set is the one definition of its rule.
# The server is not ready: the data it would serve is not the data it guards.
REFUSING = frozenset({Alert.StoreEmpty, Alert.StoreReplaced, Alert.StoreUnreachable,
                      Alert.EmbedderMismatch})
# The memory routes answer 503 `store_refused` (guard/refuse.py): serving or writing would
# mix the wrong store's data with the guarded one's.
REFUSING_DATA = frozenset({Alert.StoreEmpty, Alert.StoreReplaced})
# The scheduled snapshots and journal shipping wait: a replaced or emptied store must not be
# backed up over the good backups, nor ship journal into a lineage it is not or that another
# writer also writes.
HOLDING = frozenset({Alert.StoreEmpty, Alert.StoreReplaced, Alert.WriterConflict})


def backup_stale_after(backup_interval: float) -> float:
    """Seconds after which the newest valid backup is stale (BackupStale, `doctor`): one and
    a half intervals, plus 15 minutes for a slow snapshot."""
    return 1.5 * backup_interval + 900


@dataclass
class Observation:
    store_id: str
    lineage_id: str
    backend: str
    location: str
    active_embedder: str | None
    seq: int
    namespaces: dict[str, int]
    restored_from: dict[str, Any] | None = None
    restore_incomplete: dict[str, Any] | None = None  # a restore was interrupted (kill -9)

    @property
    def total(self) -> int:
        return sum(self.namespaces.values())


@dataclass
class Finding:
    alert: Alert
    firing: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    findings: list[Finding]
    accept: str | None = None  # a ledger event to record ("first-seen", "observed", "restored")
    note: str | None = None
    restored: str | None = None  # a restore (by id) the ledger is to accept with this record

    def firing(self) -> list[Finding]:
        return [f for f in self.findings if f.firing]

    def refusing_data(self) -> list[Finding]:
        """The firing findings for which the memory routes answer 503: REFUSING_DATA, and a
        store file deleted or replaced under this process."""
        return [f for f in self.firing()
                if f.alert in REFUSING_DATA or f.details.get("file_swapped")]


def assess(obs: Observation, ledger: LedgerRecord | None, configured_embedder: str | None,
           drop_ratio: float, now: datetime | None = None) -> Verdict:
    now = now or datetime.now(UTC)
    if obs.restore_incomplete:
        # Half a restore (the process died in it): not servable; restoring again finishes it.
        marker = obs.restore_incomplete
        return Verdict([*(f for f in _all_clear("as expected") if f.alert != Alert.StoreEmpty),
                        Finding(Alert.StoreEmpty, True, (
                            f"the store holds an unfinished restore of backup "
                            f"{marker.get('backup')} (started {marker.get('started_at')}); it "
                            "is not served until the restore is finished"), {
                                "hint": "with MEMVAULT_AUTO_RESTORE=empty the guard restores "
                                "again; by hand: `memvault restore latest --yes`"})])
    if ledger is None:  # nothing to compare with: this store starts the record
        return Verdict(_all_clear("no ledger yet; this store starts it"), accept="first-seen")
    known = (f"lineage {ledger.lineage_id} (store {ledger.store_id}) held {ledger.memories} "
             f"memories on {ledger.observed_at}, its journal reaching seq {ledger.seq}")
    findings: dict[Alert, Finding] = {f.alert: f for f in _all_clear("as expected")}
    accept: str | None = "observed"
    note = None
    restored: str | None = None
    if obs.lineage_id == ledger.lineage_id:
        marker = obs.restored_from or {}
        rid = restore_id(obs.restored_from)
        fresh_restore = rid is not None and rid not in ledger.restores
        restored = rid if fresh_restore else None
        if obs.seq < ledger.seq:
            if fresh_restore and marker.get("replayed_upto") == obs.seq:
                accept, note = "restored", (
                    f"restored from backup {marker.get('backup')}; journal "
                    f"seq {obs.seq + 1}..{ledger.seq} ({ledger.seq - obs.seq} entries) had not "
                    "been shipped and are lost")
            else:
                accept, restored = None, None
                why = (f"; its restore marker names restore {rid}, which the ledger accepted "
                       "before the lineage went further" if rid and not fresh_restore else "")
                findings[Alert.StoreReplaced] = Finding(Alert.StoreReplaced, True, (
                    f"the store was rolled back: its journal ends at seq {obs.seq}, but "
                    f"{known}{why}"), {"store_seq": obs.seq, "ledger_seq": ledger.seq,
                                  "hint": "restore the newest backup (`memvault restore "
                                  "latest --dry-run`, then --yes), or accept this store "
                                  "with `memvault adopt`"})
        baseline = count_dropped(ledger, obs.total, now, drop_ratio)
        if baseline:
            findings[Alert.MemoryCountDrop] = Finding(Alert.MemoryCountDrop, True, (
                f"the store holds {obs.total} memories, down from {baseline} within 24 h "
                f"(more than {drop_ratio:.0%})"), {
                    "memories": obs.total, "peak_24h": baseline,
                    "hint": "check the journal (`history`) for the deletes; restore a backup "
                    "if they were not intended"})
    elif ledger.seq == 0 and ledger.memories == 0:
        # The store before this one never held anything: nothing can have been lost.
        return Verdict(_all_clear("replaced a store that never held data"),
                       accept="first-seen", note=f"replaced store {ledger.store_id}, which "
                       "never held data")
    else:
        accept = None
        if obs.total == 0:
            findings[Alert.StoreEmpty] = Finding(Alert.StoreEmpty, True, (
                f"the store is empty, but {known}"), {
                    "store_id": obs.store_id, "location": obs.location,
                    "hint": "check MEMVAULT_DATABASE_URL (new credentials or database name?); "
                    "with MEMVAULT_AUTO_RESTORE=empty memvault restores the newest valid "
                    "backup into it"})
        if obs.store_id != ledger.store_id or obs.total:
            findings[Alert.StoreReplaced] = Finding(Alert.StoreReplaced, True, (
                f"this is not the guarded store: store {obs.store_id} of lineage "
                f"{obs.lineage_id} ({obs.total} memories, {obs.location}), but {known}"), {
                    "store_id": obs.store_id, "lineage_id": obs.lineage_id,
                    "hint": "point MEMVAULT_DATABASE_URL back at the guarded store, or accept "
                    "this one as the start of a new lineage with `memvault adopt`"})
    # An empty store of another lineage is waiting for a restore: the vectors it will hold are
    # the guarded lineage's, so that is the embedder to compare with.
    empty_newcomer = obs.total == 0 and obs.lineage_id != ledger.lineage_id
    expected = ledger.active_embedder if empty_newcomer else obs.active_embedder
    if configured_embedder and expected and configured_embedder != expected:
        findings[Alert.EmbedderMismatch] = Finding(Alert.EmbedderMismatch, True, (
            f"the configured embedder is {configured_embedder}, but the "
            f"{'store' if obs.total else 'guarded lineage'}'s vectors were made by {expected}"),
            {"configured": configured_embedder, "expected": expected,
             "hint": "set MEMVAULT_EMBEDDER back, or move the store to the new model "
             "online with `memvault reembed --embedder SPEC` (an empty store being refilled "
             "by the guard is re-embedded by the restore)"})
    return Verdict(list(findings.values()), accept=accept, note=note, restored=restored)


def count_dropped(ledger: LedgerRecord, total: int, now: datetime,
                  drop_ratio: float) -> int | None:
    """The peak of the last 24 h when `total` is more than `drop_ratio` below it (the one
    MemoryCountDrop rule, for memvault's store and a watched mem0 table alike), else None."""
    baseline = ledger.peak_since(now - timedelta(hours=24))
    if baseline and total < (1 - drop_ratio) * baseline:
        return baseline
    return None


def unreachable(error: str) -> Finding:
    return Finding(Alert.StoreUnreachable, True, f"the store cannot be read: {error}",
                   {"hint": "check that the database is up and MEMVAULT_DATABASE_URL"})


def _all_clear(summary: str) -> list[Finding]:
    return [Finding(name, False, summary) for name in
            (Alert.StoreEmpty, Alert.StoreReplaced, Alert.MemoryCountDrop, Alert.EmbedderMismatch,
             Alert.StoreUnreachable)]


def assess_backups(now: float, newest_valid_at: float | None, last_results: list[Any],
                   journal_lag_s: float, backup_interval: float,
                   journal_interval: float, failing: str | None = None) -> list[Finding]:
    """Findings about the leader's backups: stale (no valid snapshot within 1.5 intervals plus
    15 min), invalid (the last run was not valid everywhere), journal lag (shipping failing for
    more than three intervals, at least a minute), failing (the last run failed: at once, not
    after a day of staleness). `newest_valid_at` is an age turned into a time by the caller
    (see Guard.backup_age): never a future stamp taken for "fresh"."""
    stale_after = backup_stale_after(backup_interval)
    findings = [Finding(Alert.BackupStale, False, "a recent valid backup exists"),
                Finding(Alert.BackupInvalid, False, "the last backup run was valid everywhere"),
                Finding(Alert.JournalLag, False, "the journal ships on time"),
                Finding(Alert.BackupFailing, False, "the last backup run succeeded")]
    if failing:
        findings[3] = Finding(Alert.BackupFailing, True, f"the last backup run failed: {failing}", {
            "hint": "the server log has the traceback; `memvault backup create` shows the "
            "error (run it with the server stopped, or `POST /backups`)"})
    journal_lag_s = max(0.0, journal_lag_s)
    if newest_valid_at is not None and now - newest_valid_at > stale_after:
        hours = (now - newest_valid_at) / 3600
        findings[0] = Finding(Alert.BackupStale, True, (
            f"the newest valid backup is {hours:.1f} h old (interval "
            f"{backup_interval / 3600:.1f} h)"), {
                "hint": "see `memvault backup list` and the server log for failed runs; "
                "`memvault backup create` takes one now"})
    bad = not_valid(last_results)
    if bad:
        reasons = "; ".join(f"{r.destination}: {r.status} ({', '.join(r.reasons)})"
                            for r in bad)
        findings[1] = Finding(Alert.BackupInvalid, True, f"the last backup run was not valid: "
                              f"{reasons}", {"hint": "`memvault backup verify --all` and the "
                                             "reasons above say what is wrong"})
    if journal_lag_s > max(3 * journal_interval, 60.0):
        findings[2] = Finding(Alert.JournalLag, True, (
            f"journal entries have waited {journal_lag_s:.0f} s to ship"), {
                "hint": "check the backup destinations (the server log names the failure)"})
    return findings


def several_candidates(obs: Observation, lineages: list[tuple[str, str]]) -> Finding:
    """A store with no record of its own lineage, and several gone lineages holding data in the
    destinations: which one it replaces is for a person to say. `lineages`: (id, who wrote it)."""
    names = "; ".join(who for _, who in lineages)
    alert = Alert.StoreEmpty if obs.total == 0 else Alert.StoreReplaced
    return Finding(alert, True, (
        f"this store (lineage {obs.lineage_id}, {obs.total} memories) has no ledger of its own, "
        f"and the backup destinations hold several other lineages with data: {names}"), {
            "lineages": [lid for lid, _ in lineages],
            "hint": "restore the one this store replaces by hand (`memvault backup list`, "
            "then `memvault restore <backup id> --yes`), or start a new lineage with "
            "`memvault adopt`"})


def ledger_unknown(obs: Observation, why: str) -> Finding | None:
    """An empty store while the ledger is unknown is not served (it would answer "no memories"
    for data that may exist); a store with data keeps serving, not ready, until it is known."""
    if obs.total:
        return None
    return Finding(Alert.StoreEmpty, True, f"the store is empty and {why}", {
        "hint": "check the backup destinations (an object store whose listing lags or answers "
        "nothing?); the guard checks again every few seconds"})


def clock_skew(now: datetime, stamps: list[tuple[str, str]]) -> Finding:
    """Wall-clock stamps (what, ISO time) later than `now`: a clock that ran ahead wrote them,
    or this clock is behind. Order never follows them (seq does); this says so to a person."""
    ahead = [f"{what} is stamped {stamp}" for what, stamp in stamps
             if seconds_ahead(now, stamp) is not None]
    if not ahead:
        return Finding(Alert.ClockSkew, False, "no stamp is ahead of this clock")
    return Finding(Alert.ClockSkew, True, (
        f"{'; '.join(ahead)}, but this clock says {now.isoformat()}: a clock ran ahead (or "
        "this one is behind). Newest means highest seq, so nothing is hidden; ages from such "
        "stamps are not trusted"), {"now": now.isoformat(), "ahead": ahead,
                                    "hint": "check NTP on this host and on every host writing "
                                    "to the backup destinations"})


def writer_conflict(obs: Observation, others: list[str]) -> Finding:
    if not others:
        return Finding(Alert.WriterConflict, False, "this process is the lineage's only writer")
    return Finding(Alert.WriterConflict, True, (
        f"another writer ships journal for this store's lineage {obs.lineage_id} (store "
        f"{obs.store_id}, {obs.location}): {'; '.join(others)}. Journal shipping and "
        "snapshots from this process are held so that they do not fork the lineage further"), {
            "hint": "stop one of the two (a copied store file, a second server on the same "
            "file over NFS?); give the copy a new lineage with `memvault adopt`"})
