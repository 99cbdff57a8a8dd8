"""The guard as the server and the CLI see it: the readiness check (503 while the store is
empty, replaced, unreachable or fed by the wrong embedder, or while the guard cannot know what it
should hold; other firing alerts are listed as `warnings`), the guard's metrics for the app's
registry, and the verdict `memvault status` shows (the running guard's, or one computed now).
The guard itself is built and started by memvault/runtime.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric

from memvault.backup.destinations import open_destinations
from memvault.config.fingerprint import fingerprint
from memvault.guard.checks import (
    REFUSING,
    Observation,
    Verdict,
    assess,
    ledger_unknown,
    several_candidates,
)
from memvault.guard.drift import drift_report
from memvault.guard.lineages import Known, LivenessWatch, choose, survey
from memvault.guard.watchdog import (
    LEDGER_REREAD_SECONDS,
    TICK_SECONDS,
    Guard,
    read_observation,
)

if TYPE_CHECKING:
    from memvault.memory import Memory

log = logging.getLogger("memvault.guard")
__all__ = ["LEDGER_REREAD_SECONDS", "TICK_SECONDS", "Guard", "GuardMetrics", "current_verdict",
           "guard_check", "read_observation"]


def guard_check(guard: Guard | None) -> dict[str, Any]:
    """The readiness check of a process whose guard is `guard` (None: not running here)."""
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


class GuardMetrics:
    """The guard's own registry (alerts, identity, drill) exposed on the app's registry."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    def collect(self) -> Iterator[Metric]:
        yield from self._guard.registry.collect()


def current_verdict(memory: Memory, guard: Guard | None = None
                    ) -> tuple[Verdict, dict[str, Any]]:
    """The running guard's last verdict (`guard`: the server's), or one computed now (for
    `memvault status`, which runs without a server): the store against the ledger, no alerts
    sent."""
    if guard is not None and guard.verdict is not None:
        return guard.verdict, {"checked_at": guard.checked_at, "source": "watchdog",
                               "config_drift": guard.config_drift.report,
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
                     "config_drift": drift_report(fingerprint(memory.settings), known.ledger),
                     "ledger_lineage": known.ledger.lineage_id if known.ledger else None,
                     "ledger_unknown": known.unknown, "deciding": known.pending}


def known_now(obs: Observation, destinations: list[Any]) -> tuple[Known, list[str]]:
    """Which ledger the store is compared with, from one look. A CLI cannot wait to see a
    writer's beat move: another lineage whose head is not marked stopped stays undecided
    (`pending`), for the running server's guard to decide."""
    found = survey(destinations, obs.lineage_id)
    return choose(obs, found, LivenessWatch(float("inf"))), found.problems
