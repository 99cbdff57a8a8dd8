"""One background job loop: a named daemon thread that runs a step every N seconds until
stopped, and outlives any one bad step (logged with its traceback and counted).

Every scheduled job of `serve` runs on it (the guard's checks, snapshots, journal shipping,
the drill), so stopping, crash handling and first waits behave the same everywhere."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("memvault.periodic")

# A step returns None to wait the interval again, or the seconds to wait this once (a failed
# backup is retried in minutes, not in a day).
Step = Callable[[], float | None]
Wait = Callable[[threading.Event, float], bool]


def _event_wait(stop: threading.Event, seconds: float) -> bool:
    return stop.wait(seconds)


class Periodic:
    """`start()` runs `first_wait` (a number, or a callable asked in the thread: it may do
    slow I/O), then `step` every `interval` seconds; `stop()` ends the loop at its next wait
    and joins the thread. `wait(stop_event, seconds)` returns True once stopped; tests inject
    one that does not sleep."""

    def __init__(self, name: str, step: Step, interval: float | Callable[[], float], *,
                 first_wait: float | Callable[[], float] | None = None,
                 wait: Wait = _event_wait, join_timeout: float = 30.0) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.first_wait = first_wait
        self.wait = wait
        self.join_timeout = join_timeout
        self.runs = 0
        self.crashes = 0  # steps that raised (logged each time)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.join_timeout)

    def _every(self) -> float:
        return self.interval() if callable(self.interval) else self.interval

    def _first(self) -> float:
        first = self.first_wait
        if first is None:
            return self._every()
        if not callable(first):
            return first
        try:
            return first()
        except Exception:
            self.crashes += 1
            log.exception("%s: deciding the first wait crashed", self.name)
            return self._every()

    def _loop(self) -> None:
        wait = self._first()
        while not self.wait(self._stop, wait):
            wait = self._every()
            self.runs += 1
            try:
                again = self.step()
            except Exception:  # a job thread must never die silently
                self.crashes += 1
                log.exception("%s crashed", self.name)
                continue
            if again is not None:
                wait = again
