"""Hybrid retrieval: fusing the vector and the keyword ranking of one search.

Both lists come from the same scope (namespace and filters). Each candidate's keyword score is
divided by the best keyword score of the query, so both signals lie in [0, 1] and the fused
score keeps mem0's meaning of `threshold` (a similarity-like score, higher is better). A
candidate found by only one list gets 0 from the other keyword-wise, and the weakest cosine
seen vector-wise (it ranked below every vector candidate, so that is an upper bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from memvault.store.records import MemoryRecord


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    KEYWORD = "keyword"


# Chosen on the LoCoMo development split (bench/bench_locomo.py --tune): see BENCHMARKS.md.
VECTOR_WEIGHT = 0.5
# A memory next to a strong match (the turn before or after it) is often the answer itself:
# each candidate gets this share of its best neighbour's fused score.
NEIGHBOUR_WEIGHT = 0.2
CANDIDATES = 100  # per list: a small top_k still sees keyword matches the vector misses


@dataclass(frozen=True)
class Scored:
    """One result of a search with what made its score (the explain=true details)."""

    record: MemoryRecord
    score: float
    vector: float | None
    keyword: float | None
    vector_rank: int | None
    keyword_rank: int | None
    neighbour: float | None = None  # the best neighbour's fused score (hybrid only)

    def details(self, mode: SearchMode, embedder: str) -> dict[str, object]:
        return {
            "search_mode": mode.value, "embedder": embedder,
            "vector_score": self.vector, "keyword_score": self.keyword,
            "vector_rank": self.vector_rank, "keyword_rank": self.keyword_rank,
            "neighbour_score": self.neighbour, "fused_score": self.score,
            # the name memvault used before hybrid search: kept for existing readers
            "cosine_similarity": self.vector,
        }


def fuse(
    vector_hits: list[tuple[MemoryRecord, float]],
    keyword_hits: list[tuple[MemoryRecord, float]],
    vector_weight: float = VECTOR_WEIGHT,
) -> list[Scored]:
    """Weighted sum of cosine and max-normalized BM25, best first (ties by vector rank)."""
    floor = max(0.0, min((s for _, s in vector_hits), default=0.0))
    best_keyword = max((s for _, s in keyword_hits), default=0.0)
    vectors = {r.id: (rank, max(0.0, s)) for rank, (r, s) in enumerate(vector_hits, 1)}
    keywords = {r.id: (rank, s) for rank, (r, s) in enumerate(keyword_hits, 1)}
    records = {r.id: r for r, _ in keyword_hits} | {r.id: r for r, _ in vector_hits}
    out = []
    for memory_id, record in records.items():
        v_rank, v_score = vectors.get(memory_id, (None, None))
        k_rank, k_score = keywords.get(memory_id, (None, None))
        normalized = (k_score or 0.0) / best_keyword if best_keyword > 0 else 0.0
        cosine = v_score if v_score is not None else floor
        fused = vector_weight * cosine + (1 - vector_weight) * normalized
        out.append(Scored(record, min(1.0, fused), v_score, k_score, v_rank, k_rank))
    out.sort(key=lambda s: (-s.score, s.vector_rank or len(records) + 1))
    return out


def smooth(
    scored: list[Scored], neighbours: Mapping[str, tuple[str | None, str | None]],
    weight: float = NEIGHBOUR_WEIGHT,
) -> list[Scored]:
    """Add to each candidate `weight` times the fused score of its best neighbour among the
    candidates, rescaled by 1 + weight so the score stays in [0, 1]; best first."""
    fused = {s.record.id: s.score for s in scored}
    out = []
    for item in scored:
        near = max((fused.get(n or "", 0.0) for n in neighbours.get(item.record.id, ())),
                   default=0.0)
        out.append(replace(item, score=(item.score + weight * near) / (1 + weight),
                           neighbour=near))
    out.sort(key=lambda s: (-s.score, s.vector_rank or len(out) + 1))
    return out


def single(hits: list[tuple[MemoryRecord, float]], mode: SearchMode) -> list[Scored]:
    """One list alone: its own score (a keyword score normalized by the query's best)."""
    best = max((s for _, s in hits), default=0.0)
    out = []
    for rank, (record, score) in enumerate(hits, 1):
        if mode is SearchMode.VECTOR:
            out.append(Scored(record, max(0.0, score), score, None, rank, None))
        else:
            out.append(Scored(record, score / best if best > 0 else 0.0, None, score, None, rank))
    return out
