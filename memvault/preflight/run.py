"""`memvault preflight`: what the next start with a candidate configuration would do, found out
without changing anything.

The candidate's database is looked at read-only (preflight/database.py), the ledger and backups
in its destinations are read, and the guard's own rules (`guard.checks.assess`, pure) judge the
store it would find, assuming the current server stops for the change (so a lineage whose
writer has not marked itself stopped counts as gone, as it will be). Each consequence is a
Nagios check: 0 nothing risky, 1 review, 2 the start would refuse or lose data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memvault.backup.catalog import BackupEntry, list_backups
from memvault.backup.destinations import open_destinations
from memvault.config.fingerprint import ConfigFingerprint, fingerprint
from memvault.errors import MemvaultError
from memvault.guard.checks import REFUSING, assess
from memvault.guard.lineages import Known, LivenessWatch, choose, survey
from memvault.guard.status import CRITICAL, OK, WARNING, State, finish
from memvault.preflight.candidate import Candidate, differences
from memvault.preflight.database import DatabaseProbe, probe_database

if TYPE_CHECKING:
    from memvault.backup.destinations import Destination
    from memvault.config import Settings
    from memvault.embed import EmbedderIdentity

SAMPLE_TEXTS = 32  # texts embedded to time the candidate embedder


@dataclass
class Preflight:
    current: Settings
    current_flags: dict[str, Any]
    candidate: Candidate
    checks: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, state: State, message: str, **details: Any) -> None:
        self.checks.append({"name": name, "state": state, "message": message, **details})


def run_preflight(current: Settings, current_flags: dict[str, Any], candidate: Candidate
                  ) -> dict[str, Any]:
    """The report (JSON): differences, database, ledger, predicted verdict, re-embedding and
    address; `exit_code` the worst check's state."""
    run = Preflight(current, current_flags, candidate)
    cand = candidate.settings
    diffs = differences(current, current_flags, candidate)
    run.report.update(
        current=fingerprint(current).to_json(), candidate=fingerprint(cand).to_json(),
        differences=[d.to_json() for d in diffs], ignored_env_keys=candidate.ignored)
    if not diffs:
        run.check("config", OK, "the candidate configuration is the current one")
    unknown = [key for key in candidate.ignored if key.upper().startswith("MEMVAULT_")]
    if unknown:  # a misspelt key would leave the setting at its current value
        run.check("config", WARNING, f"{', '.join(unknown)}: not memvault settings (misspelt?); "
                  "the next start ignores them")
    probe = probe_database(cand.database_url or "", cand.db_timeout)
    run.report["database"] = probe.to_json()
    identity = _embedder(run)
    if not probe.reachable:
        run.check("database", CRITICAL, f"database {probe.url} ({probe.target}): NOT reachable: "
                  f"{probe.error}; the server would not start",
                  hint="check host, port, user and password (or the file path)")
    elif probe.error:
        run.check("database", CRITICAL, f"database {probe.url}: {probe.error}")
    else:
        run.check("database", OK, f"database {probe.url} ({probe.target}): reachable; " + (
            f"store {probe.store_id} of lineage {probe.lineage_id}, {probe.total} memories in "
            f"{len(probe.namespaces)} namespaces, journal seq {probe.seq}" if probe.schema
            else "no memvault schema -> the next start creates a new empty store"))
        _judge(run, probe, identity)
    _address(run)
    return finish(run.report, run.checks)


def _embedder(run: Preflight) -> EmbedderIdentity | None:
    from memvault.embed import make_embedder

    cand = run.candidate.settings
    try:
        embedder = make_embedder(cand.embedder, cand)
        identity = embedder.identity()
        started = time.perf_counter()
        embedder.embed([f"preflight sample text number {i}" for i in range(SAMPLE_TEXTS)])
        per_text = (time.perf_counter() - started) / SAMPLE_TEXTS
    except MemvaultError as exc:
        run.check("embedder", CRITICAL, f"embedder {cand.embedder} cannot be used: {exc}")
        return None
    run.report["embedder"] = {"key": identity.key, "seconds_per_text": per_text}
    return identity


def _judge(run: Preflight, probe: DatabaseProbe, identity: EmbedderIdentity | None) -> None:
    cand = run.candidate.settings
    obs = probe.observation(_backend(cand))
    try:
        dests = open_destinations(cand)
        known = choose(obs, survey(dests, obs.lineage_id), LivenessWatch(0.0))
    except MemvaultError as exc:
        run.check("ledger", CRITICAL, f"the ledger cannot be read from the backup destinations:"
                  f" {exc}; the guard would not know what the store should hold")
        return
    ledger = known.ledger
    run.report["ledger"] = ledger.to_json() if ledger else None
    if ledger is not None:
        run.check("ledger", OK, f"the ledger holds lineage {ledger.lineage_id} with "
                  f"{ledger.memories} memories in {len(ledger.namespaces)} namespaces (journal "
                  f"seq {ledger.seq})")
    elif known.ambiguous:
        run.check("ledger", CRITICAL, "the destinations hold several gone lineages with data; "
                  "the guard will refuse the store until a person picks one")
    else:
        run.check("ledger", OK, "no ledger for this store yet: the next start begins one")
    verdict = assess(obs, ledger, identity.key if identity else None, cand.alert_drop_ratio)
    for finding in verdict.firing():
        state = CRITICAL if finding.alert in REFUSING else WARNING
        run.check("guard", state, f"the guard will raise {finding.alert}: {finding.summary}",
                  alert=str(finding.alert), hint=finding.details.get("hint"))
    restore = _auto_restore(run, obs.total, known, dests, [f.alert for f in verdict.firing()])
    _reembed(run, probe, restore, identity)


def _auto_restore(run: Preflight, total: int, known: Known, dests: list[Destination],
                  firing: list[str]) -> BackupEntry | None:
    """The backup the guard would restore into an empty store (MEMVAULT_AUTO_RESTORE=empty)."""
    lineage = known.restore_lineage or (known.ledger.lineage_id if known.ledger else None)
    if "StoreEmpty" not in firing or total or lineage is None:
        return None
    entries: list[BackupEntry] = []
    for dest in dests:
        entries += [e for e in list_backups(dest)
                    if e.valid and e.manifest and e.manifest.lineage_id == lineage]
    newest = max(entries, key=BackupEntry.order, default=None)
    if run.candidate.settings.auto_restore != "empty":
        run.check("restore", CRITICAL, "MEMVAULT_AUTO_RESTORE=never: the store stays empty and "
                  "refused until `memvault restore latest` is run by hand")
    elif newest is None or newest.manifest is None:
        run.check("restore", CRITICAL, f"no valid backup of lineage {lineage} to restore from: "
                  "the store would stay empty and refused")
    else:
        size = newest.summary()["size"] or 0
        shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
        run.report["auto_restore"] = newest.summary()
        run.check("restore", CRITICAL, f"the guard will auto-restore backup {newest.id} (taken "
                  f"{newest.created_at}, valid, {newest.manifest.total} memories, {shown}) and "
                  "the journal shipped after it into the new store; until then the store is "
                  "refused")
    return newest


def _reembed(run: Preflight, probe: DatabaseProbe, restore: BackupEntry | None,
             identity: EmbedderIdentity | None) -> None:
    if identity is None:
        return
    if restore is not None and restore.manifest is not None:
        model, count = restore.manifest.active_embedder, restore.manifest.total
        how = "the restore re-embeds"
    else:
        model, count = probe.active_embedder, probe.total
        how = "`memvault reembed` must re-embed"
    if not model or model == identity.key or not count:
        return
    seconds = count * run.report["embedder"]["seconds_per_text"]
    run.report["reembed"] = {"from": model, "to": identity.key, "memories": count,
                             "estimated_seconds": round(seconds, 1)}
    run.check("embedder", WARNING, f"embedder {identity.key} differs from the store's {model}: "
              f"{how} {count} memories, ~{seconds:.1f} s with this embedder (measured on "
              f"{SAMPLE_TEXTS} texts)")


def _address(run: Preflight) -> None:
    """A new listen address breaks every client still pointed at the old one."""
    cand = fingerprint(run.candidate.settings)
    running = ConfigFingerprint.from_json((run.report.get("ledger") or {}).get("config") or {}) \
        if (run.report.get("ledger") or {}).get("config") else fingerprint(run.current)
    if cand.listen != running.listen:
        run.check("address", WARNING, f"the server would listen on {cand.listen}, not "
                  f"{running.listen} as now: clients using MEMVAULT_URL=http://{running.listen} "
                  "will fail until they are changed")
    if run.candidate.settings.backup_urls != run.current.backup_urls:
        run.check("backups", WARNING, "the candidate's backup destinations differ from the "
                  "current ones: the guard compares with the ledger found there, and the current "
                  "store's backups stay where they are")


def _backend(settings: Settings) -> str:
    return "sqlite" if settings.sqlite_path is not None else "postgres"
