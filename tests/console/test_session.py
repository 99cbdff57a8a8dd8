"""Console sessions: an idle one ends, the store is bounded, ids are unguessable."""

from __future__ import annotations

import pytest

from memvault.server.console import session as sessions_module
from memvault.server.console.session import IDLE_SECONDS, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_session_ends_and_a_used_one_lives_on() -> None:
    clock = Clock()
    sessions = Sessions(clock)
    used, idle = sessions.create("key-a"), sessions.create(None)
    clock.now += IDLE_SECONDS - 1
    assert sessions.get(used.id) is used
    clock.now += 2
    assert sessions.get(idle.id) is None and sessions.get(used.id) is used
    sessions.drop(used.id)
    assert sessions.get(used.id) is None and sessions.get("") is None


def test_the_oldest_sessions_go_first_beyond_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "MAX_SESSIONS", 3)
    sessions = Sessions(Clock())
    first, second = sessions.create(None), sessions.create(None)
    sessions.get(first.id)  # used: no longer the oldest
    sessions.create(None)
    sessions.create(None)
    assert sessions.get(second.id) is None and sessions.get(first.id) is first


def test_ids_and_tokens_are_long_and_distinct() -> None:
    sessions = Sessions(Clock())
    made = [sessions.create(None) for _ in range(50)]
    values = {s.id for s in made} | {s.csrf for s in made}
    assert len(values) == 100 and min(len(v) for v in values) >= 43
