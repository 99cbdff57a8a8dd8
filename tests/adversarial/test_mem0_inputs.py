"""Hostile mem0-shaped inputs on every surface that takes a memory id, a timestamp or a
reference date: always a clear 4xx (or InvalidInput in Python), never a 5xx. Sampled with
hypothesis (seed printed on failure), small enough to stay fast."""

from __future__ import annotations

import contextlib
import math
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memvault.errors import InvalidInput
from memvault.memory import Memory

# ids a script or an agent might send: empty, NUL, path tricks, near-UUIDs, very long
IDS = st.one_of(
    st.sampled_from(["", "\x00", "a\x00b", "../../etc/passwd", "%00", "null", "None",
                     "00000000-0000-0000-0000-00000000000g", "x" * 5000, "🙂",
                     "12345678-1234-1234-1234-1234567890123"]),
    st.text(min_size=0, max_size=60),
)
MOMENTS = st.one_of(
    st.sampled_from(["", "\x00", "yesterday", "2024-13-01", "2024-02-30", "9999-12-31",
                     "0000-01-01", "-1", "1e309", "2024-01-01T10:00:00", "nan", "inf"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
FAST = settings(max_examples=40, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_malformed_ids_over_every_route(memory: Memory, live_url: str) -> None:
    with httpx.Client(base_url=live_url) as http:
        @FAST
        @given(bad=IDS)
        def check(bad: str) -> None:
            segment = quote(bad, safe="")
            for method, path, body in [
                ("GET", f"/memories/{segment}", None),
                ("GET", f"/memories/{segment}/history", None),
                ("PUT", f"/memories/{segment}", {"text": "x"}),
                ("DELETE", f"/memories/{segment}", None),
                ("GET", f"/v1/memories/{segment}/", None),
                ("DELETE", f"/v1/memories/{segment}/", None),
            ]:
                answer = http.request(method, path, json=body)
                assert answer.status_code < 500, (method, path, answer.status_code, answer.text)
            for call in (memory.get, memory.history, memory.delete):
                with contextlib.suppress(InvalidInput):
                    call(bad)
        check()


def test_hostile_timestamps_and_reference_dates(memory: Memory, live_url: str) -> None:
    memory.add("a memory to search", user_id="h", infer=False)
    with httpx.Client(base_url=live_url) as http:
        @FAST
        @given(moment=MOMENTS)
        def check(moment: Any) -> None:
            if isinstance(moment, float) and not math.isfinite(moment):
                moment = str(moment)  # JSON has no NaN or Infinity: send what a client could
            added = http.post("/memories", json={
                "messages": [{"role": "user", "content": "dated"}], "user_id": "h",
                "infer": False, "timestamp": moment})
            assert added.status_code < 500, (moment, added.status_code, added.text)
            found = http.post("/search", json={"query": "memory", "filters": {"user_id": "h"},
                                                "reference_date": moment})
            assert found.status_code < 500, (moment, found.status_code, found.text)
            platform = http.post("/v3/memories/search/", json={
                "query": "memory", "filters": {"user_id": "h"}, "reference_date": moment})
            assert platform.status_code < 500, (moment, platform.status_code, platform.text)
            for call in (lambda: memory.search("memory", filters={"user_id": "h"},
                                               reference_date=moment),
                         lambda: memory.add("dated", user_id="h", infer=False,
                                            timestamp=moment)):
                with contextlib.suppress(InvalidInput):
                    call()
        check()


@pytest.mark.parametrize("moment", [
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31", "0001-01-01",
    253402300799, 253402300800, 2**63, -1, float("nan"), "", "2024-02-30"])
def test_edges_of_time_are_refused_or_served(memory: Memory, moment: Any) -> None:
    """Each edge is either served or refused with InvalidInput: never another error."""
    memory.add("an old memory", user_id="e", infer=False, timestamp=0)
    with contextlib.suppress(InvalidInput):
        memory.search("memory", filters={"user_id": "e"}, reference_date=moment)
    with contextlib.suppress(InvalidInput):
        memory.add("dated at an edge", user_id="e", infer=False, timestamp=moment)


@pytest.mark.parametrize("name", ["user_id", "agent_id", "run_id"])
def test_wildcards_never_widen_a_scoped_key(memory: Memory, live_url: str, name: str) -> None:
    from memvault.server.keys import create_key

    memory.add("alice's secret", user_id="alice", agent_id="a1", run_id="r1", infer=False)
    memory.add("bob's secret", user_id="bob", agent_id="b1", run_id="r2", infer=False)
    _, token = create_key(memory.store, user_id="alice")
    headers = {"X-API-Key": token}
    for path, body in [("/search", {"query": "secret", "filters": {name: "*"}}),
                       ("/v3/memories/search/", {"query": "secret", "filters": {name: "*"}}),
                       ("/v3/memories/", {"filters": {name: "*"}})]:
        answer = httpx.post(live_url + path, json=body, headers=headers)
        assert answer.status_code == 200, (path, answer.text)
        assert {r["user_id"] for r in answer.json()["results"]} == {"alice"}, path
