"""Hostile search queries: keyword syntax, stop words and sizes never break a search.

Each query reaches the full-text index of both backends through REST in every search mode:
the answer is a 200 with the usual shape (or a clear 4xx), never a 5xx or a leaked FTS/tsquery
syntax error. Queries are sampled with hypothesis (seed printed on failure).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memvault.memory import Memory

FIXED = [
    "", "   ", "?!...;;", "\"", "\"\"\"", "*", "a*", "NEAR", "NEAR(a b)", "a NEAR/2 b", "OR",
    "AND NOT", "foo OR", "-", "-foo", ":", "memory:foo", "col:", "^foo", "(", ")", "'", "''",
    "\\", "\\'", "!!&&||", "a & b | !c", "<->", "foo:*", "the of and a", "is it the",
    "😀🎉", "🦜 parrot 🦜", "ÅNGSTRÖM café naïve", "日本語のテキスト", "\x00", "\u200b",
    "drop table memories; --", "' OR 1=1 --", "x" * 10_000, "word " * 2_000,
    # date words reach the temporal parser: impossible days, huge numbers, only dates
    "on February 30, 2023", "0 January 2023", "99 May, 2023", "in May " * 500, "2023",
    "May 1, 1900 2099 last year yesterday today this month", "9" * 5_000 + " June",
]
TOKENS = st.sampled_from(['"', "*", "NEAR", "OR", "AND", "NOT", "-", ":", "(", ")", "^", "'",
                          "\\", "|", "&", "!", "<->", "the", "parrot", "😀", "é", " ", "May", "in",
                          "31", "2023", ",", "last year"])


def seed_store(memory: Memory) -> None:
    memory.add([{"role": "user", "content": t} for t in [
        "Polly the parrot says NEAR and OR all day", "The café serves naïve crêpes",
        "Release notes: v2.0 - \"quoted\" * stars",
    ]], user_id="alice", infer=False)


def check_search(client: Any, query: str, mode: str) -> None:
    response = client.post("/search", json={"query": query, "filters": {"user_id": "alice"},
                                            "search_mode": mode, "explain": True})
    assert response.status_code < 500, (query[:80], mode, response.text[:300])
    body = response.json()
    if response.status_code == 200:
        assert set(body) == {"results"}
        for item in body["results"]:
            assert {"id", "memory", "score", "score_details"} <= set(item)
            assert 0 <= item["score"] <= 1
    else:
        text = str(body).lower()
        assert "fts5" not in text and "syntax error" not in text and "tsquery" not in text


def test_fixed_hostile_queries(client: Any, memory: Memory) -> None:
    seed_store(memory)
    for query in FIXED:
        for mode in ("hybrid", "keyword", "vector"):
            check_search(client, query, mode)
    found = client.post("/search", json={"query": "NEAR OR \"parrot\"*",
                                         "filters": {"user_id": "alice"},
                                         "search_mode": "keyword"}).json()["results"]
    assert [r["memory"] for r in found] == ["Polly the parrot says NEAR and OR all day"]
    assert client.post("/search", json={"query": "the of and", "filters": {"user_id": "alice"},
                                        "search_mode": "keyword"}).json() == {"results": []}


@settings(max_examples=40, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TOKENS, min_size=1, max_size=12).map("".join), st.sampled_from(
    ["hybrid", "keyword"]))
def test_sampled_syntax_soup(client: Any, memory: Memory, query: str, mode: str) -> None:
    if not memory.store.counts():
        seed_store(memory)
    check_search(client, query, mode)
