"""The loop every background job runs on (memvault/periodic.py)."""

from __future__ import annotations

import logging
import threading

import pytest

from memvault.periodic import Periodic


class Waits:
    """An injected wait: records what the loop asked for, never sleeps, stops after `limit`."""

    def __init__(self, limit: int) -> None:
        self.asked: list[float] = []
        self.limit = limit
        self.done = threading.Event()

    def __call__(self, stop: threading.Event, seconds: float) -> bool:
        self.asked.append(seconds)
        if stop.is_set() or len(self.asked) > self.limit:
            self.done.set()
            return True
        return False


def test_a_step_runs_every_interval_after_the_first_wait_and_may_ask_for_another_wait() -> None:
    answers = iter([None, 7.0, None])
    waits = Waits(limit=3)
    loop = Periodic("test-loop", lambda: next(answers), 60.0, first_wait=lambda: 0.5, wait=waits)
    loop.start()
    assert waits.done.wait(5)
    loop.stop()
    assert waits.asked == [0.5, 60.0, 7.0, 60.0]
    assert loop.runs == 3 and loop.crashes == 0 and not loop.running


def test_a_crashing_step_is_logged_counted_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the destination went away")

    waits = Waits(limit=2)
    loop = Periodic("test-crash", step, 1.0, wait=waits)
    with caplog.at_level(logging.ERROR, logger="memvault.periodic"):
        loop.start()
        assert waits.done.wait(5)
        loop.stop()
    assert len(calls) == 2 and loop.crashes == 1
    assert "test-crash crashed" in caplog.text and "the destination went away" in caplog.text


def test_stop_ends_a_real_wait_at_once_and_the_loop_can_start_again() -> None:
    ran = threading.Event()
    loop = Periodic("test-stop", ran.set, 3600.0, first_wait=0.0)
    loop.start()
    assert ran.wait(5)
    assert loop.running
    loop.stop()  # returns without waiting out the hour
    assert not loop.running and loop.stopping()
    ran.clear()
    loop.start()
    assert ran.wait(5) and not loop.stopping()
    loop.stop()
