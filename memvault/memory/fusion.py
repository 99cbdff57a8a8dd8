"""Hybrid retrieval: fusing the vector and the keyword ranking of one search.

Both lists come from the same scope (namespace and filters) and hold memory ids and scores;
records are read for the results only. Each candidate's keyword score is divided by the best
keyword score of the query, so both signals lie in [0, 1] and the fused score keeps mem0's
meaning of `threshold` (a similarity-like score, higher is better). A candidate found by only
one list gets 0 from the other keyword-wise, and the weakest cosine seen vector-wise (it
ranked below every vector candidate, so that is an upper bound).

Then three signals a memory store has and a plain index does not, each kept because the
LoCoMo development split says so (bench/bench_locomo.py, BENCHMARKS.md):
- a date the query names ("on 24 October, 2023", "in May") lifts the memories made then;
- a memory next to a strong match (the turn before or after it) shares a little of its score
  (smoothing), and the turns up to two steps around the best matches are lifted to a share of
  theirs: in a conversation the answer is often the turn right after the one that matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum

from memvault.memory.query_dates import DateMention


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    KEYWORD = "keyword"


# Chosen on the LoCoMo development split (bench/bench_locomo.py --tune): see BENCHMARKS.md.
VECTOR_WEIGHT = 0.5
CANDIDATES = 50  # per list: a small top_k still sees keyword matches the vector misses
DATE_WEIGHT = 0.2  # added to the fused score of a memory made on a date the query names
NEIGHBOUR_WEIGHT = 0.2  # share of the best adjacent candidate's score (smoothing)
LEADERS = 20  # the best candidates whose neighbours are read (smoothing and lifting)
LIFT = 0.85  # a turn next to a leader scores at least this share of the leader's score
LIFT_DECAY = 0.9  # per further step away
REACH = 2  # steps around a leader that are lifted

Neighbours = Mapping[str, tuple[str | None, str | None]]


@dataclass(frozen=True)
class Scored:
    """One result of a search with what made its score (the explain=true details)."""

    memory_id: str
    score: float
    vector: float | None
    keyword: float | None
    vector_rank: int | None
    keyword_rank: int | None
    neighbour: float | None = None  # the best neighbour's score that counted (hybrid only)
    date_match: bool = False  # made on a date the query names (hybrid only)

    def details(self, mode: SearchMode, embedder: str) -> dict[str, object]:
        return {
            "search_mode": mode.value, "embedder": embedder,
            "vector_score": self.vector, "keyword_score": self.keyword,
            "vector_rank": self.vector_rank, "keyword_rank": self.keyword_rank,
            "neighbour_score": self.neighbour, "date_match": self.date_match,
            "fused_score": self.score,
            # the name memvault used before hybrid search: kept for existing readers
            "cosine_similarity": self.vector,
        }


def _ranked(items: list[Scored]) -> list[Scored]:
    """Best first; ties by vector rank, then id (the same order on every backend)."""
    last = len(items) + 1
    return sorted(items, key=lambda s: (-s.score, s.vector_rank or last, s.memory_id))


def fuse(
    vector_hits: list[tuple[str, float]],
    keyword_hits: list[tuple[str, float]],
    vector_weight: float = VECTOR_WEIGHT,
) -> list[Scored]:
    """Weighted sum of cosine and max-normalized BM25, best first."""
    floor = max(0.0, min((s for _, s in vector_hits), default=0.0))
    best_keyword = max((s for _, s in keyword_hits), default=0.0)
    vectors = {i: (rank, max(0.0, s)) for rank, (i, s) in enumerate(vector_hits, 1)}
    keywords = {i: (rank, s) for rank, (i, s) in enumerate(keyword_hits, 1)}
    out = []
    for memory_id in dict.fromkeys([*(i for i, _ in vector_hits), *(i for i, _ in keyword_hits)]):
        v_rank, v_score = vectors.get(memory_id, (None, None))
        k_rank, k_score = keywords.get(memory_id, (None, None))
        normalized = (k_score or 0.0) / best_keyword if best_keyword > 0 else 0.0
        cosine = v_score if v_score is not None else floor
        fused = vector_weight * cosine + (1 - vector_weight) * normalized
        out.append(Scored(memory_id, fused, v_score, k_score, v_rank, k_rank))
    return _ranked(out)


def dated(scored: list[Scored], made: Mapping[str, date | None],
          mentions: list[DateMention], weight: float = DATE_WEIGHT) -> list[Scored]:
    """Add `weight` to the candidates made on a date the query names; best first."""
    if not mentions:
        return scored
    out = []
    for item in scored:
        when = made.get(item.memory_id)
        if when is not None and any(m.matches(when) for m in mentions):
            item = replace(item, score=item.score + weight, date_match=True)
        out.append(item)
    return _ranked(out)


def smooth(
    scored: list[Scored], near: Neighbours, *, leaders: int = LEADERS,
    weight: float = NEIGHBOUR_WEIGHT, lift: float = LIFT, decay: float = LIFT_DECAY,
    reach: int = REACH,
) -> list[Scored]:
    """Each of the first `leaders` candidates gets `weight` times its best adjacent
    candidate's score, rescaled by 1 + weight (the score stays in [0, 1]); then every memory
    within `reach` steps of a leader scores at least lift * decay**(step - 1) times the
    leader's (a memory that was no candidate joins the results so); best first."""
    fused = {s.memory_id: s.score for s in scored}
    out = {s.memory_id: s for s in scored}
    smoothed = {}
    for item in scored[:leaders]:
        adjacent = max((fused.get(n or "", 0.0) for n in near.get(item.memory_id, ())),
                       default=0.0)
        score = (item.score + weight * adjacent) / (1 + weight)
        smoothed[item.memory_id] = score
        out[item.memory_id] = replace(item, score=score, neighbour=adjacent)
    for leader, score in smoothed.items():
        for side in (0, 1):
            current: str | None = leader
            for step in range(reach):
                current = near.get(current or "", (None, None))[side]
                if current is None:
                    break
                floor = lift * decay**step * score
                existing = out.get(current)
                if existing is None:
                    out[current] = Scored(current, floor, None, None, None, None, score)
                elif existing.score < floor:
                    out[current] = replace(existing, score=floor,
                                           neighbour=max(existing.neighbour or 0.0, score))
    return _ranked([replace(s, score=min(1.0, s.score)) if s.score > 1.0 else s
                    for s in out.values()])


def single(hits: list[tuple[str, float]], mode: SearchMode) -> list[Scored]:
    """One list alone: its own score (a keyword score normalized by the query's best)."""
    best = max((s for _, s in hits), default=0.0)
    out = []
    for rank, (memory_id, score) in enumerate(hits, 1):
        if mode is SearchMode.VECTOR:
            out.append(Scored(memory_id, max(0.0, score), score, None, rank, None))
        else:
            out.append(Scored(memory_id, score / best if best > 0 else 0.0, None, score, None,
                              rank))
    return out
