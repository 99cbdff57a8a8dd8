"""The status report of `memvault status` and GET /status (one JSON shape for both): what the
store is, what it holds, whether it can be searched, and the guard's verdict on it. Nagios
states: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from memvault.errors import MemvaultError


class State(IntEnum):
    """A check's state, Nagios style; the worst one is the exit code of `status` and `doctor`
    and its name the report's `status`."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


OK, WARNING, CRITICAL, UNKNOWN = State.OK, State.WARNING, State.CRITICAL, State.UNKNOWN


def collect_status(flags: dict[str, Any]) -> dict[str, Any]:
    """The status report (same JSON as GET /status). Never raises for store or embedder faults:
    those become CRITICAL checks."""
    from memvault.config import load_settings, redact_url
    from memvault.memory import Memory

    settings = load_settings(flags)
    checks: list[dict[str, Any]] = []
    report: dict[str, Any] = {"database_url": redact_url(settings.database_url or "")}
    try:
        memory = Memory(settings, actor="status")
    except MemvaultError as exc:
        checks.append({"name": "store", "state": CRITICAL, "message": str(exc)})
        return finish(report, checks)
    with memory:
        return status_report(memory)


def status_report(memory: Any, guard: Any = None) -> dict[str, Any]:
    """The report of an open store (`memvault status`, GET /status and the console); `guard`:
    the server's running guard. A store fault becomes a CRITICAL check, never an exception."""
    from memvault.config import redact_url  # lazily: the CLI imports this module at start

    report: dict[str, Any] = {"database_url": redact_url(memory.settings.database_url or "")}
    checks: list[dict[str, Any]] = []
    try:
        report.update(memory_status(memory, checks, guard))
    except MemvaultError as exc:
        checks.append({"name": "store", "state": CRITICAL, "message": str(exc)})
    return finish(report, checks)


def memory_status(memory: Any, checks: list[dict[str, Any]], guard: Any = None
                  ) -> dict[str, Any]:
    """The store, embedder and guard sections of the report, appending a check for each.
    `guard`: the server's running guard (its verdict is shown), else one is computed."""
    store = memory.store
    meta = store.meta()
    counts = store.counts()
    vectors = store.vector_counts()
    total = sum(counts.values())
    section: dict[str, Any] = {
        "store": {
            "store_id": meta.store_id,
            "lineage_id": meta.lineage_id,
            "backend": meta.backend,
            "location": meta.location,
            "created_at": meta.created_at,
            "schema_version": meta.schema_version,
            "last_seq": store.last_seq(),
        },
        "memories": {"total": total, "namespaces": counts},
        "embedders": {
            "active": meta.active_embedder,
            "configured": None,
            "vectors": vectors,
        },
    }
    if meta.backend == "postgres":
        # The cluster this process is connected to, and the one the store was created on
        # (the guard compares them; a dump restored into another cluster shows a new value).
        section["store"]["system_identifier"] = (meta.extra.get("pg_connected") or {}).get(
            "system_identifier")
        section["store"]["created_on_system_identifier"] = meta.extra.get(
            "pg_system_identifier")
    checks.append({"name": "store", "state": OK, "message": f"{meta.backend} store reachable"})
    try:
        identity = memory.embedder_identity()
        section["embedders"]["configured"] = identity.describe()
        checks.append({"name": "embedder", "state": OK,
                       "message": f"{identity.key} matches the store"})
    except MemvaultError as exc:
        checks.append({"name": "embedder", "state": CRITICAL, "message": str(exc)})
    active = store.meta().active_embedder
    unqueryable = total - vectors.get(active, 0) if active else total
    section["memories"]["unqueryable"] = unqueryable
    if unqueryable > 0:
        checks.append({"name": "vectors", "state": WARNING,
                       "message": f"{unqueryable} memories have no vector from {active}"})
    section["embedders"]["index_builds"] = builds = store.index_builds()
    for build in builds:
        if build["state"] == "failed":
            checks.append({"name": "vector_index", "state": WARNING, "message": "the vector index "
                           f"of {build['embedder']} could not be built: {build['last_error']}"})
    if total == 0:
        checks.append({"name": "contents", "state": WARNING, "message": "the store is empty"})
    section["guard"] = _guard_check(memory, checks, guard)
    return section


def _guard_check(memory: Any, checks: list[dict[str, Any]], guard: Any = None
                 ) -> dict[str, Any]:
    """The store against the guard's ledger (kept with the backups)."""
    from memvault.guard.api import current_verdict
    from memvault.guard.checks import REFUSING

    try:
        verdict, info = current_verdict(memory, guard)
    except MemvaultError as exc:
        checks.append({"name": "guard", "state": WARNING,
                       "message": f"the ledger could not be checked: {exc}"})
        return {"error": str(exc)}
    firing = verdict.firing()
    for finding in firing:
        state = CRITICAL if finding.alert in REFUSING else WARNING
        checks.append({"name": "guard", "state": state,
                       "message": f"{finding.alert}: {finding.summary}"})
    if info.get("deciding"):
        checks.append({"name": "guard", "state": WARNING,
                       "message": f"not decided from one look: {info['deciding']} (the "
                       "running server's guard decides)"})
    if info.get("ledger_unknown"):
        checks.append({"name": "ledger", "state": WARNING,
                       "message": f"the ledger is unknown: {info['ledger_unknown']}"})
    for problem in info.get("ledger_problems") or []:
        # One destination listing what another does not, a listing that hides what a GET
        # proves, an unreadable record: the ledger may be incomplete.
        checks.append({"name": "ledger", "state": WARNING, "message": problem})
    drift = info.get("config_drift") or {}
    if drift.get("changes") or drift.get("changed_secrets"):
        from memvault.guard.drift import describe_changes

        # A deliberate change is no fault: named here, counted in memvault_config_drift_total.
        checks.append({"name": "config", "state": OK, "message": "the configuration changed "
                       f"since the ledger's last record: {describe_changes(drift)}"})
    if not firing and not info.get("ledger_unknown") and not info.get("deciding"):
        checks.append({"name": "guard", "state": OK, "message": "the store is the one the "
                       "ledger knows" if info.get("ledger_lineage") or info["source"] ==
                       "watchdog" else "no ledger yet (written by `memvault serve`)"})
    return {**info, "firing": [f.alert for f in firing]}


def finish(report: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Name each check's state and set the report's status and exit code to the worst one."""
    from memvault.config import redact_url  # lazily: the CLI imports this module at start

    worst = max((c["state"] for c in checks), default=UNKNOWN)
    for check in checks:
        check["status"] = State(check.pop("state")).name
        check["message"] = redact_url(str(check.get("message", "")))
    report["checks"] = checks
    report["status"] = State(worst).name
    report["exit_code"] = int(worst)
    return report
