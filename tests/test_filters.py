"""mem0's filter language: parser errors, and SQL that agrees with the reference evaluator."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memvault.errors import InvalidInput
from memvault.memory import Memory
from memvault.store import Store, evaluate, parse_filters
from memvault.store.filters import NO_ENTITY, Bool, Cond, entity_constraints
from tests.helpers import prepared, record, vectors

WORDS = ["apple", "Apple", "ÉCOLE", "école", "straße", "Zebra", "a b", "", "10", "o'hara"]
KEYS = ["color", "n", "flag", "name", "missing", "user_id", "agent_id", "role", "created_at"]
COLUMN_TEXT = {"user_id": ["alice", "bob", "carol"], "agent_id": ["bot", "helper"],
               "role": ["user", "assistant"]}


def _corpus() -> list[Any]:
    rng = random.Random(7)
    recs = []
    for i in range(80):
        metadata: dict[str, Any] = {}
        for key, choices in {
            "color": WORDS,
            "n": [0, 1, 2, -3, 2.5, 10, 10**12, True, "2"],
            "flag": [True, False, 1, 0, "true", None],
            "name": [*WORDS, 5],
        }.items():
            if rng.random() < 0.7:
                metadata[key] = rng.choice(choices)
        recs.append(record(
            f"memory {i}",
            user_id=rng.choice(COLUMN_TEXT["user_id"]),
            agent_id=rng.choice([*COLUMN_TEXT["agent_id"], None]),
            role=rng.choice([*COLUMN_TEXT["role"], None]),
            metadata=metadata or None,
            created_at=f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T00:00:00+00:00",
        ))
    return recs


def _values_for(key: str) -> st.SearchStrategy[Any]:
    if key in COLUMN_TEXT:
        return st.sampled_from(COLUMN_TEXT[key] + ["zed", ""])
    if key == "created_at":
        return st.sampled_from(["2026-03-15T00:00:00+00:00", "2026-06", "2027"])
    return st.one_of(
        st.sampled_from(WORDS),
        st.integers(min_value=-5, max_value=12),
        st.sampled_from([2.5, 10**12, 0.0]),
        st.booleans(),
    )


@st.composite
def condition(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from(KEYS))
    value = draw(_values_for(key))
    text_only = key in COLUMN_TEXT or key == "created_at"
    ops = ["eq", "ne", "in", "nin", "exists", "bare", "list"]
    if isinstance(value, str):
        ops += ["contains", "icontains", "gt", "gte", "lt", "lte"]
    elif not isinstance(value, bool):
        ops += ["gt", "gte", "lt", "lte"]
    op = draw(st.sampled_from(ops))
    if op == "exists":
        return {key: "*"}
    if op == "bare":
        return {key: value}
    if op in ("in", "nin", "list"):
        more = draw(st.lists(_values_for(key), min_size=0, max_size=3))
        values = [value, *more]
        if text_only:
            values = [v for v in values if isinstance(v, str)] or ["x"]
        return {key: values} if op == "list" else {key: {op: values}}
    return {key: {op: value}}


filters_strategy = st.recursive(
    condition(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"AND": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"OR": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"NOT": xs}, st.lists(inner, min_size=1, max_size=2)),
    ),
    max_leaves=6,
)


@pytest.fixture
def filled(store: Store) -> tuple[Store, list[Any]]:
    ident = prepared(store)
    recs = _corpus()
    store.add(recs, vectors(len(recs)), ident.key, None)
    return store, recs


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=filters_strategy)
def test_sql_agrees_with_reference_evaluator(filled: tuple[Store, list[Any]],
                                             raw: dict[str, Any]) -> None:
    store, recs = filled
    try:
        node = parse_filters(raw)
    except InvalidInput:
        return  # e.g. a number compared with a text column: rejected before any SQL
    expected = {r.id for r in recs if evaluate(node, r)}
    assert {r.id for r in store.list(node)} == expected, raw


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=filters_strategy, user=st.sampled_from(["alice", "bob", "carol"]))
def test_filtered_search_agrees_with_reference(filled: tuple[Store, list[Any]],
                                               raw: dict[str, Any], user: str) -> None:
    store, recs = filled
    try:
        node = parse_filters({"AND": [{"user_id": user}, raw]})
    except InvalidInput:
        return
    key = store.meta().active_embedder
    hits = store.search(vectors(1, seed=5)[0], key, node, 200)
    assert {r.id for r, _ in hits} == {r.id for r in recs if evaluate(node, r)}


def test_parse_shapes() -> None:
    assert parse_filters(None) is None
    assert parse_filters({}) is None
    assert parse_filters({"user_id": "a", "agent_id": None}) == Cond("user_id", "eq", "a")
    assert parse_filters({"k": [1, 2]}) == Cond("k", "in", (1, 2))
    assert parse_filters({"k": "*"}) == Cond("k", "exists")
    assert parse_filters({"k": {"gte": 1, "lt": 5}}) == Bool(
        "AND", (Cond("k", "gte", 1), Cond("k", "lt", 5)))
    node = parse_filters({"user_id": "a", "OR": [{"x": 1}, {"y": 2}]})
    assert entity_constraints(node) == {"user_id": "a"}


def test_entity_constraints_see_through_nested_ands() -> None:
    both = Bool("AND", (Cond("user_id", "eq", "u"), Cond("agent_id", "eq", "a")))
    assert entity_constraints(Bool("AND", (both, Cond("k", "eq", 1)))) == {
        "user_id": "u", "agent_id": "a"}
    twice = Bool("AND", (Cond("user_id", "eq", "u"), Bool("AND", (Cond("user_id", "eq", "v"),))))
    assert entity_constraints(twice) == {"user_id": NO_ENTITY}
    assert entity_constraints(Bool("OR", (both,))) == {}
    assert entity_constraints(Bool("NOT", (Cond("user_id", "eq", "u"),))) == {}


def test_search_by_two_ids_and_a_filter(memory: Memory) -> None:
    """Memory.search nests the ids' AND inside the filter's: the scope is still seen (it was
    refused as naming no id)."""
    memory.add("I keep bees on the roof", user_id="u", agent_id="a", metadata={"k": 1},
               infer=False)
    memory.add("I keep bees in the garden", user_id="u", agent_id="b", metadata={"k": 1},
               infer=False)
    hits = memory.search("bees", user_id="u", agent_id="a", filters={"k": 1})["results"]
    assert [h["memory"] for h in hits] == ["I keep bees on the roof"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"k": {"like": "x"}}, "unknown filter operator 'like'"),
        ({"k": {}}, "empty operator"),
        ({"and": [{"k": 1}]}, "upper case"),
        ({"AND": []}, "non-empty list"),
        ({"k": {"in": []}}, "non-empty list"),
        ({"k": {"in": "abc"}}, "non-empty list"),
        ({"k": {"gt": True}}, "not a boolean"),
        ({"k": {"contains": 3}}, "needs a string"),
        ({"k": {"eq": {"nested": 1}}}, "string, number or boolean"),
        ({"k": {"eq": float("nan")}}, "finite"),
        ({"k": 2**70}, "64-bit"),
        ({"bad key!": 1}, "invalid filter key"),
        ({"user_id": 5}, "holds text"),
        ({"k": "\udcff"}, "UTF-8"),
        (["user_id", "a"], "must be an object"),
        ({"k": {"in": list(range(1001))}}, "more than 1000"),
    ],
)
def test_bad_filters_are_clear_errors(raw: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=None) as caught:
        parse_filters(raw)
    assert fragment in str(caught.value)


def test_deep_nesting_is_refused() -> None:
    raw: dict[str, Any] = {"k": 1}
    for _ in range(40):
        raw = {"NOT": [raw]}
    with pytest.raises(InvalidInput, match="deeper"):
        parse_filters(raw)


# ---------------------------------------------------------------- large filters within limits

_big_value = st.one_of(st.sampled_from(WORDS), st.integers(-5, 12), st.sampled_from(
    [2.5, 10**12, 0.0, 1.0, True, False, 2**63 - 1, -(2**63), 1e300]))


@settings(max_examples=12, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(key=st.sampled_from(["color", "n", "flag", "name", "missing"]),
       values=st.lists(_big_value, min_size=990, max_size=1000),
       negate=st.booleans())
def test_big_in_lists_agree_with_reference(filled: tuple[Store, list[Any]], key: str,
                                           values: list[Any], negate: bool) -> None:
    store, recs = filled
    node = parse_filters({key: {"nin" if negate else "in": values}})
    expected = {r.id for r in recs if evaluate(node, r)}
    assert {r.id for r in store.list(node)} == expected


def test_in_of_1000_and_or_of_1000_answer(filled: tuple[Store, list[Any]]) -> None:
    store, recs = filled
    for raw in (
        {"n": {"in": list(range(1000))}},
        {"user_id": {"in": ["alice", *[f"u{i}" for i in range(999)]]}},
        {"OR": [{"n": i} for i in range(1000)]},
        {"AND": [{"n": {"ne": i}} for i in range(3, 1003)]},
        {"OR": [{"AND": [{"n": i}, {"color": {"ne": "x"}}]} for i in range(500)]},
    ):
        node = parse_filters(raw)
        assert {r.id for r in store.list(node)} == {r.id for r in recs if evaluate(node, r)}
        key = store.meta().active_embedder
        hits = store.search(vectors(1, seed=5)[0], key,
                            parse_filters({"AND": [{"user_id": "alice"}, raw]}), 200)
        assert len(hits) <= len(recs)


def test_many_keys_with_big_in_lists_answer(filled: tuple[Store, list[Any]]) -> None:
    store, recs = filled
    raw = {f"k{i}": {"nin": list(range(i, i + 1000))} for i in range(70)}
    node = parse_filters(raw)
    assert {r.id for r in store.list(node)} == {r.id for r in recs}


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"OR": [{"n": i} for i in range(2001)]}, "over the limit of 2000"),
    ({f"k{i}": {"in": list(range(1000))} for i in range(101)}, "over the limit of 100000"),
    ({"k": {"nin": list(range(1001))}}, "more than 1000"),
])
def test_filters_over_the_limits_are_refused(raw: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_filters(raw)
    assert fragment in str(caught.value)
