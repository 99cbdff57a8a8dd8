"""The guard's server extension (see memvault/server/extensions.py):

- `background_jobs(settings, memory)`: the writer lock of a SQLite store (held for the life of
  `serve`), the watchdog (memvault/guard/watchdog.py) and the drill job.
- `install(app)`: a readiness check (503 while the store is empty, replaced, unreachable or
  fed by the wrong embedder, or while the guard cannot know what it should hold; other firing
  alerts are listed as `warnings`) and the guard's metrics on the app's registry.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from memvault.backup.destinations import open_destinations
from memvault.guard.checks import (
    REFUSING,
    Observation,
    Verdict,
    assess,
    ledger_unknown,
    several_candidates,
)
from memvault.guard.lineages import Known, LivenessWatch, choose, survey
from memvault.guard.refuse import RefuseUnguardedStore
from memvault.guard.watchdog import (
    _GUARDS,
    LEDGER_REREAD_SECONDS,
    TICK_SECONDS,
    Guard,
    read_observation,
)
from memvault.store.writer_lock import hold_writer_lock

if TYPE_CHECKING:
    from fastapi import FastAPI

    from memvault.config import Settings
    from memvault.memory import Memory

log = logging.getLogger("memvault.guard")
__all__ = ["LEDGER_REREAD_SECONDS", "TICK_SECONDS", "Guard", "background_jobs", "current_verdict",
           "guard_check", "install", "read_observation", "running_guard"]


def guard_check(memory: Memory) -> dict[str, Any]:
    guard = _GUARDS.get(id(memory))
    if guard is None or guard.verdict is None:
        return {"name": "guard", "ok": True, "message": "guard not running in this process"}
    firing = guard.verdict.firing()
    refusing = [f for f in firing if f.alert in REFUSING]
    warnings = [f"{f.alert}: {f.summary}" for f in firing if f.alert not in REFUSING]
    if refusing:
        return {"name": "guard", "ok": False, "code": refusing[0].alert,
                "alerts": [f.alert for f in refusing], "warnings": warnings,
                "message": "; ".join(f"{f.alert}: {f.summary}" for f in refusing)}
    known = guard.known
    if known is not None and (known.pending or known.unknown):
        code = "guard_deciding" if known.pending else "ledger_unavailable"
        return {"name": "guard", "ok": False, "code": code, "warnings": warnings,
                "message": known.pending or known.unknown}
    return {"name": "guard", "ok": True, "warnings": warnings,
            "message": f"store matches the ledger (checked {guard.checked_at})"}


class _Forward:
    """Exposes the running guard's metrics on the app's registry."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def collect(self) -> Any:
        guard = _GUARDS.get(id(self._memory))
        if guard is not None:
            yield from guard.registry.collect()


def install(app: FastAPI) -> None:
    app.state.readiness_checks.append(guard_check)
    memory = app.state.memory

    def verdict() -> Verdict | None:
        guard = _GUARDS.get(id(memory))
        return guard.verdict if guard is not None else None

    app.add_middleware(RefuseUnguardedStore, verdict=verdict)
    registry = getattr(app.state, "metrics_registry", None)
    if registry is not None:
        with contextlib.suppress(ValueError):
            registry.register(_Forward(app.state.memory))


class WriterLockJob:
    """Holds the SQLite store's writer lock for the life of `serve` (memvault/store/
    writer_lock.py). Taken when the jobs are made, before the server listens, so that a second
    server on the same store exits at once naming the first's pid."""

    def __init__(self, memory: Memory) -> None:
        self.lock = hold_writer_lock(memory.store, "memvault serve")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        if self.lock is not None:
            self.lock.release()


def background_jobs(settings: Settings, memory: Memory) -> list[Any]:
    from memvault.guard.drill_job import DrillJob

    lock = WriterLockJob(memory)
    guard = Guard(settings, memory)
    guard.drill = DrillJob(settings, memory, guard)  # the drill job uses the guard's alerts
    return [guard, guard.drill, lock]  # stopped in this order: the lock is released last


def running_guard(memory: Memory) -> Guard | None:
    return _GUARDS.get(id(memory))


def current_verdict(memory: Memory) -> tuple[Verdict, dict[str, Any]]:
    """The running guard's last verdict, or one computed now (for `memvault status`, which
    runs without a server): the store against the ledger, no alerts sent."""
    guard = running_guard(memory)
    if guard is not None and guard.verdict is not None:
        return guard.verdict, {"checked_at": guard.checked_at, "source": "watchdog",
                               "ledger_problems": guard.ledger_problems,
                               "ledger_unknown": guard.known.unknown if guard.known else None,
                               "lineages": guard.lineages_status()}
    obs = read_observation(memory)
    known, problems = known_now(obs, open_destinations(memory.settings))
    try:
        configured = str(memory.embedder.identity().key)
    except Exception:
        configured = None
    verdict = assess(obs, known.ledger, configured, memory.settings.alert_drop_ratio)
    if known.ambiguous:
        several = several_candidates(obs, [(st.lineage_id, st.writer())
                                           for st in known.ambiguous])
        verdict.findings = [f for f in verdict.findings if f.alert != several.alert]
        verdict.findings.append(several)
    if known.unknown and known.ledger is None:
        unknown = ledger_unknown(obs, known.unknown)
        if unknown is not None:
            verdict.findings.append(unknown)
    return verdict, {"source": "now", "ledger_problems": problems,
                     "ledger_lineage": known.ledger.lineage_id if known.ledger else None,
                     "ledger_unknown": known.unknown, "deciding": known.pending}


def known_now(obs: Observation, destinations: list[Any]) -> tuple[Known, list[str]]:
    """Which ledger the store is compared with, from one look. A CLI cannot wait to see a
    writer's beat move: another lineage whose head is not marked stopped stays undecided
    (`pending`), for the running server's guard to decide."""
    found = survey(destinations, obs.lineage_id)
    return choose(obs, found, LivenessWatch(float("inf"))), found.problems
