"""Hybrid search's signals beyond the two lists: dates a query names, neighbours lifted around
the best matches, and BM25 computed alike on both backends."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from memvault.memory import Memory
from memvault.memory.fusion import Scored, dated, smooth
from memvault.memory.query_dates import DateMention, mentioned_dates
from memvault.store import parse_filters
from memvault.store.keywords import KeywordTokenizer, bm25

ALICE = parse_filters({"user_id": "alice"})


@pytest.mark.parametrize(("query", "expected"), [
    ("What did Audrey eat for dinner on October 24, 2023?", [DateMention(2023, 10, 24)]),
    ("what happened on 24th of october 2023", [DateMention(2023, 10, 24)]),
    ("Which tournament did Nate win in the beginning of November 2022?",
     [DateMention(2022, 11)]),
    ("When did Melanie go camping in June?", [DateMention(month=6)]),
    ("Where did they travel in 2019?", [DateMention(2019)]),
    ("Melanie may go camping", []),  # a month word needs a day, a year or a preposition
    ("What did I do on February 30, 2023?", [DateMention(2023)]),  # no such day: the year
    ("Mmm 12345 and 2023x", []),
])
def test_dates_a_query_names(query: str, expected: list[DateMention]) -> None:
    assert mentioned_dates(query, today=date(2026, 3, 1)) == expected


def test_relative_dates_count_from_the_reference_day() -> None:
    assert mentioned_dates("what did I do yesterday", date(2026, 3, 1)) == [
        DateMention(2026, 2, 28)]
    assert mentioned_dates("my plans from last month", date(2026, 1, 15)) == [
        DateMention(2025, 12)]
    assert mentioned_dates("trips last year", date(2026, 1, 15)) == [DateMention(2025)]
    assert DateMention(month=5).matches(date(2019, 5, 31))
    assert not DateMention(2023, 5).matches(date(2024, 5, 1))


def candidate(memory_id: str, score: float) -> Scored:
    return Scored(memory_id, score, score, None, 1, None)


def test_smoothing_and_lifting_around_the_leaders() -> None:
    # a conversation t1..t6; only t3 and t6 are candidates
    near = {"t1": (None, "t2"), "t2": ("t1", "t3"), "t3": ("t2", "t4"), "t4": ("t3", "t5"),
            "t5": ("t4", "t6"), "t6": ("t5", None)}
    ranked = smooth([candidate("t3", 0.8), candidate("t6", 0.1)], near, leaders=1,
                    weight=0.2, lift=0.85, decay=0.9, reach=2)
    scores = {s.memory_id: round(s.score, 4) for s in ranked}
    assert scores["t3"] == round(0.8 / 1.2, 4)  # no adjacent candidate to share
    assert scores["t2"] == scores["t4"] == round(0.85 * 0.8 / 1.2, 4)
    assert scores["t1"] == scores["t5"] == round(0.85 * 0.9 * 0.8 / 1.2, 4)
    assert scores["t6"] == 0.1  # beyond reach, and not a leader: unchanged
    lifted = next(s for s in ranked if s.memory_id == "t2")
    assert lifted.vector_rank is None and lifted.neighbour == pytest.approx(0.8 / 1.2)
    assert [s.memory_id for s in ranked][:3] == ["t3", "t2", "t4"]


def test_a_named_date_lifts_the_memories_made_then() -> None:
    scored = [candidate("later", 0.6), candidate("that day", 0.5), candidate("undated", 0.55)]
    made = {"later": date(2023, 11, 2), "that day": date(2023, 10, 24), "undated": None}
    ranked = dated(scored, made, [DateMention(2023, 10, 24)], weight=0.2)
    assert [s.memory_id for s in ranked] == ["that day", "later", "undated"]
    assert ranked[0].date_match and ranked[0].score == pytest.approx(0.7)
    assert dated(scored, made, []) == scored


def add_made(memory: Memory, text: str, made: str, **kwargs: Any) -> str:
    """Store `text` as `add(infer=False)` would, made at `made` (mem0's timestamp)."""
    records = [replace(r, created_at=made, updated_at=made)
               for r in memory.verbatim_records(text, user_id="alice", **kwargs)]
    return memory.add_records(records)[0]["id"]


def test_search_ranks_the_memory_made_on_the_named_date_first(memory: Memory) -> None:
    add_made(memory, "Audrey ate sushi for dinner", "2023-11-02T18:00:00.000000+00:00")
    that_day = add_made(memory, "Audrey ordered some sushi for her dinner tonight",
                        "2023-10-24T10:14:00.000000+00:00")
    add_made(memory, "Audrey walked the dogs for an hour", "2023-10-25T09:00:00.000000+00:00")
    query = "What did Audrey eat for dinner on October 24, 2023?"
    plain = memory.search("What did Audrey eat for dinner?", user_id="alice", threshold=None)
    assert plain["results"][0]["id"] != that_day  # without the date, the other one wins
    result = memory.search(query, user_id="alice", threshold=None, explain=True)["results"]
    assert result[0]["id"] == that_day
    assert result[0]["score_details"]["date_match"] is True
    assert 0 <= result[0]["score"] <= 1


def test_lifted_neighbours_stay_in_the_search_scope(memory: Memory) -> None:
    """A neighbour is any memory of the namespace; the results keep the filters and expiry."""
    base = "2024-05-01T10:00:{:02d}.000000+00:00"
    add_made(memory, "Did you finish the quilt?", base.format(0), metadata={"topic": "chat"})
    match = add_made(memory, "Yes, the patchwork quilt with the blue squares is done",
                     base.format(1), metadata={"topic": "chat"})
    add_made(memory, "It took three months", base.format(2), metadata={"topic": "other"})
    expired = add_made(memory, "I gave it to my sister", base.format(3),
                       metadata={"topic": "chat"}, expiration_date="2000-01-01")
    scoped = memory.search("patchwork quilt", filters={"user_id": "alice", "topic": "chat"},
                           threshold=None)["results"]
    ids = [r["id"] for r in scoped]
    assert ids[0] == match
    assert all(r["metadata"]["topic"] == "chat" for r in scoped)
    assert expired not in ids
    every = memory.search("patchwork quilt", user_id="alice", threshold=None,
                          show_expired=True)["results"]
    assert expired in [r["id"] for r in every]


def test_both_backends_rank_keywords_by_the_same_bm25(memory: Memory) -> None:
    """PostgreSQL computes BM25 in SQL, SQLite re-scores FTS5's matches in Python: both
    equal store/keywords.py's formula over the store's own figures."""
    texts = ["the red kite flew over the red barn", "a kite", "red shoes and a red red hat",
             "blue kite string", "nothing to see here at all today"]
    ids = [a["id"] for a in memory.add([{"role": "user", "content": t} for t in texts],
                                       user_id="alice", infer=False)["results"]]
    tokenizer = KeywordTokenizer()
    documents = [tokenizer.document(t) for t in texts]
    frequency = {t: sum(t in d.split() for d in documents) for t in ("red", "kite")}
    mean = sum(len(d.split()) for d in documents) / len(documents)
    expected = dict(zip(ids, bm25(["red", "kite"], documents, len(texts), mean, frequency),
                        strict=True))
    hits = dict(memory.store.keyword_ids("red kite", ALICE, 10))
    assert set(hits) == {i for i, s in expected.items() if s > 0}
    for memory_id, score in hits.items():
        assert score == pytest.approx(expected[memory_id], rel=1e-9)


def test_a_word_just_added_is_found_in_a_store_of_frequent_stems(memory: Memory) -> None:
    """Match counts of frequent stems are remembered between searches; a rare one never is."""
    memory.add([{"role": "user", "content": f"common note number {i}"} for i in range(120)],
               user_id="alice", infer=False)
    assert memory.search("common note", user_id="alice", search_mode="keyword")["results"]
    assert memory.search("zebra", user_id="alice", search_mode="keyword")["results"] == []
    added = memory.add("a common note about a zebra", user_id="alice", infer=False)
    result = memory.search("zebra", user_id="alice", search_mode="keyword")["results"]
    assert [r["id"] for r in result] == [added["results"][0]["id"]]


def test_relative_words_count_from_the_search_reference_date(memory: Memory) -> None:
    """mem0's `search(reference_date=...)`: "last year" is the year before that date, not
    before today, so the memory made then ranks first."""
    add_made(memory, "Audrey ate sushi for dinner", "2024-03-02T18:00:00.000000+00:00")
    then = add_made(memory, "Audrey ordered some sushi for her dinner tonight",
                    "2022-06-24T10:14:00.000000+00:00")
    query = "What did Audrey eat for dinner last year?"
    result = memory.search(query, user_id="alice", threshold=None, explain=True,
                           reference_date="2023-05-01")["results"]
    assert [r["id"] for r in result] == [then]  # the 2024 memory did not exist on that date
    assert result[0]["score_details"]["date_match"] is True
    result = memory.search(query, user_id="alice", threshold=None, explain=True,
                           reference_date="2025-01-10")["results"]
    assert result[0]["id"] != then
    assert result[0]["score_details"]["date_match"] is True
