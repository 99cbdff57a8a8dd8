"""The scheduled restore drill: `DrillJob` runs `run_drill` (guard/drill.py) every
MEMVAULT_DRILL_INTERVAL on the guard's leader, keeps the success-timestamp gauge and fires /
resolves DrillFailed. The newest result is the newest record by seq (never by its stamp), and
when the next drill is due is measured on the monotonic clock once this job has run one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from memvault.backup.errors import RestoreRefused
from memvault.backup.records import name_of
from memvault.errors import MemvaultError
from memvault.guard.drill import (
    AHEAD_TOLERANCE_S,
    ALERT,
    METRIC,
    RETRY_SECONDS,
    STARTUP_DELAY_SECONDS,
    TICK_SECONDS,
    DrillCancelled,
    DrillReport,
    parse_stamp,
    read_drills,
    run_drill,
)
from memvault.progress import Advance

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.guard.watchdog import Guard
    from memvault.memory import Memory

log = logging.getLogger("memvault.guard.drill")


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
        finished = parse_stamp(newest["finished_at"]).timestamp()
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
        self._success_at = min(parse_stamp(result["finished_at"]).timestamp(), now)
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
