"""Hostile payloads: each is answered 4xx with a message that names what to change, and the
store is exactly as before (counts and journal seq). What is accepted must be what a backup can
hold byte-exact (orjson: 64-bit integers, finite floats)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memvault.errors import InvalidInput
from memvault.memory import Memory
from memvault.memory.validation import MAX_LABEL_CHARS, MAX_METADATA_DEPTH
from memvault.store.records import MemoryRecord


def _state(memory: Memory) -> tuple[dict[str, int], int]:
    return memory.store.counts(), memory.store.last_seq()


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


# (name, add kwargs beyond messages/user_id, fragment the 400 must contain)
HOSTILE_ADDS: list[tuple[str, dict[str, Any], str]] = [
    ("uint64", {"metadata": {"n": 2**64}}, "metadata.n"),
    ("int64+1", {"metadata": {"n": 2**63}}, "64-bit"),
    ("int64-1", {"metadata": {"n": -(2**63) - 1}}, "64-bit"),
    ("nested bigint", {"metadata": {"a": {"b c": [1, 10**30]}}}, 'metadata.a["b c"][1]'),
    ("nan", {"metadata": {"x": float("nan")}}, "metadata.x"),
    ("inf in list", {"metadata": {"xs": [1.0, float("inf")]}}, "metadata.xs[1]"),
    ("-inf", {"metadata": {"x": float("-inf")}}, "NaN or Infinity"),
    ("deep", {"metadata": _nested(MAX_METADATA_DEPTH + 1)}, "nests deeper"),
    ("huge metadata", {"metadata": {"blob": "x" * 70_000}}, "bytes"),
    ("nul value", {"metadata": {"s": "x\x00y"}}, "metadata.s contains a NUL"),
    ("nul key", {"metadata": {"a": {"k\x00": 1}}}, "without NUL"),
    ("memory_type", {"memory_type": "t" * (MAX_LABEL_CHARS + 1)}, "memory_type"),
    ("memory_type NUL", {"memory_type": "a\x00b"}, "memory_type"),
    ("long id", {"agent_id": "a" * 257}, "agent_id"),
    ("control id", {"run_id": "r\x00"}, "run_id"),
    ("surrogate id", {"run_id": "r\udcff"}, "UTF-8"),
]


@pytest.mark.parametrize(("name", "extra", "fragment"), HOSTILE_ADDS,
                         ids=[h[0] for h in HOSTILE_ADDS])
def test_memory_refuses_hostile_adds_and_loses_nothing(
    memory: Memory, name: str, extra: dict[str, Any], fragment: str
) -> None:
    memory.add("a fact that must stay", user_id="alice", infer=False)
    before = _state(memory)
    kwargs = {"user_id": "alice", **extra}
    with pytest.raises(InvalidInput) as refused:
        memory.add(f"hostile {name}", infer=False, **kwargs)
    assert fragment in str(refused.value), str(refused.value)
    assert _state(memory) == before


def test_memory_refuses_a_hostile_message_name(memory: Memory) -> None:
    before = _state(memory)
    with pytest.raises(InvalidInput, match=r"messages\[0\]\.name"):
        memory.add([{"role": "user", "content": "hi", "name": "n" * 10_000}], user_id="u",
                   infer=False)
    assert _state(memory) == before


def test_memory_refuses_hostile_metadata_on_update(memory: Memory) -> None:
    added = memory.add("update me", user_id="alice", infer=False)["results"][0]
    before = _state(memory)
    with pytest.raises(InvalidInput, match=r"metadata\.n"):
        memory.update(added["id"], metadata={"n": 2**70})
    assert _state(memory) == before
    assert memory.get(added["id"])["metadata"] in (None, {})


def _json_body(payload: dict[str, Any]) -> bytes:
    # The stdlib writes NaN/Infinity and big ints as Python's json parser reads them back,
    # which is what FastAPI does with a request body.
    return json.dumps(payload).encode()


@pytest.mark.parametrize(("name", "extra", "fragment"),
                         [h for h in HOSTILE_ADDS if h[0] != "surrogate id"],
                         ids=[h[0] for h in HOSTILE_ADDS if h[0] != "surrogate id"])
def test_rest_refuses_hostile_adds_with_400(
    client: Any, memory: Memory, name: str, extra: dict[str, Any], fragment: str
) -> None:
    fact = [{"role": "user", "content": "a fact that must stay"}]
    client.post("/memories", json={"messages": fact, "user_id": "alice", "infer": False})
    before = _state(memory)
    body = {"messages": [{"role": "user", "content": f"hostile {name}"}], "user_id": "alice",
            "infer": False, **extra}
    answer = client.post("/memories", content=_json_body(body),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["detail"]
    assert _state(memory) == before


def test_rest_refuses_hostile_metadata_on_update(client: Any, memory: Memory) -> None:
    added = client.post("/memories", json={"messages": [{"role": "user", "content": "keep me"}],
                                           "user_id": "alice", "infer": False}
                        ).json()["results"][0]
    before = _state(memory)
    answer = client.put(f"/memories/{added['id']}", content=b'{"text": "changed", '
                        b'"metadata": {"x": NaN}}', headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert "metadata.x" in answer.json()["detail"]
    assert _state(memory) == before
    assert client.get(f"/memories/{added['id']}").json()["memory"] == "keep me"


@pytest.mark.parametrize("nesting", [2_000, 200_000])
def test_rest_answers_absurdly_nested_bodies_with_4xx(client: Any, memory: Memory,
                                                      nesting: int) -> None:
    before = _state(memory)
    body = (b'{"messages": [{"content": "x"}], "user_id": "alice", "infer": false, '
            b'"metadata": {"k": ' + b"[" * nesting + b"]" * nesting + b"}}")
    answer = client.post("/memories", content=body, headers={"content-type":
                                                             "application/json"})
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert _state(memory) == before


@pytest.mark.parametrize(("filters", "fragment"), [
    ({"user_id": "alice", "OR": [{"n": i} for i in range(2_500)]}, "limit of 2000"),
    ({"user_id": "alice", "n": {"in": list(range(1_001))}}, "more than 1000"),
    ({"user_id": "alice", "n": 2**64}, "64-bit"),
    ({"user_id": "alice", "n": {"gt": float("nan")}}, "finite"),
    ({"user_id": "alice", "n": {"in": [1, float("inf")]}}, "finite"),
    (_nested(40, {"user_id": "alice"}), "filters nest deeper"),
])
def test_rest_refuses_hostile_filters_with_400(client: Any, filters: dict[str, Any],
                                               fragment: str) -> None:
    # `k` nesting is not a filter operator: rebuild deep ones with NOT.
    if "k" in filters:
        deep: Any = {"user_id": "alice"}
        for _ in range(40):
            deep = {"NOT": [deep]}
        filters = deep
    for answer in (
        client.post("/search", content=_json_body({"query": "x", "filters": filters}),
                    headers={"content-type": "application/json"}),
        client.get("/memories", params={"user_id": "alice", "filters": json.dumps(filters)}),
    ):
        assert answer.status_code == 400, answer.text[:300]
        assert fragment in answer.json()["detail"], answer.json()["detail"]


@pytest.mark.parametrize("filters", [
    {"user_id": "alice", "n": {"in": list(range(1_000))}},
    {"user_id": "alice", "OR": [{"n": i} for i in range(1_000)]},
    {"user_id": "alice", **{f"k{i}": {"nin": list(range(1_000))} for i in range(70)}},
])
def test_rest_answers_big_filters_within_the_limits(client: Any, filters: dict[str, Any]
                                                    ) -> None:
    client.post("/memories", json={"messages": [{"role": "user", "content": "n is seven"}],
                                   "user_id": "alice", "metadata": {"n": 7}, "infer": False})
    found = client.post("/search", json={"query": "seven", "filters": filters,
                                         "threshold": 0})
    assert found.status_code == 200, found.text[:300]
    assert len(found.json()["results"]) == 1
    encoded = json.dumps(filters)
    if len(encoded) < 60_000:  # a longer query string is the HTTP client's limit, not ours
        listed = client.get("/memories", params={"user_id": "alice", "filters": encoded})
        assert listed.status_code == 200, listed.text[:300]
        assert len(listed.json()["results"]) == 1


# ---------------------------------------------------------------- what is accepted survives

# Unbounded on purpose: what the API refuses is fine, what it accepts must encode.
_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.integers(),
    st.floats(), st.text(max_size=20),
)
_metadata = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.recursive(_json_leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
        max_leaves=8),
    max_size=5)
_ids = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1,
               max_size=30).filter(str.strip)


@settings(max_examples=40, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metadata=_metadata, user_id=_ids, agent_id=st.one_of(st.none(), _ids),
       text=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1,
                    max_size=50).filter(str.strip))
def test_whatever_add_accepts_a_backup_can_hold(
    memory: Memory, metadata: dict[str, Any], user_id: str, agent_id: str | None, text: str
) -> None:
    try:
        added = memory.add(text, user_id=user_id, agent_id=agent_id, metadata=metadata,
                           infer=False)["results"]
    except InvalidInput:
        return  # refused with a clear error: nothing to hold
    for item in added:
        record = memory.store.get(item["id"])
        assert record is not None
        # The backup writer serialises records with orjson: what was accepted must encode and
        # read back equal (ids, text and metadata byte-exact).
        again = MemoryRecord(**orjson.loads(orjson.dumps(record)))
        assert again == record


def _assert_refused(call: Callable[[], Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        call()
    assert fragment in str(refused.value)


def test_limits_hold_at_their_edges(memory: Memory) -> None:
    memory.add("edges", user_id="u" * 256, memory_type="t" * MAX_LABEL_CHARS, infer=False,
               metadata={"max": 2**63 - 1, "min": -(2**63), "deep": _nested(
                   MAX_METADATA_DEPTH - 1)})
    _assert_refused(lambda: memory.add("x", user_id="u" * 257, infer=False), "user_id")
