"""Keyword search on PostgreSQL: the keyword postings (postings.py) of the query stems are
scored by BM25 with the store's figures (FTS5's IDF, the length normalization of
store/keywords.py) in one statement, so both backends score alike and only the top_k ids and
scores leave the server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from memvault.store.keywords import (
    K1,
    LENGTH_NORMALIZATION,
    MATCH_BUDGET,
    KeywordStatistics,
    KeywordTokenizer,
    idf,
)
from memvault.store.postgres.postings import TABLE

Read = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
# A keyword search ranks this many times the rows it needs before checking their scope.
SCOPE_FACTOR = 4
_B = LENGTH_NORMALIZATION
# BM25 of a memory: (k1 + 1) times the sum over the query stems it holds of idf * tf /
# (tf + k1 * (1 - b + b * length / mean length)), from the postings alone.
_SCORE = (f"sum(w.idf * p.tf / (p.tf + {K1}::float8 * ({1 - _B}::float8 + {_B}::float8 * "
          f"p.length / %s::float8))) * {K1 + 1}::float8")
_STEMS = "unnest(%s::text[], %s::float8[]) AS w(stem, idf)"


def ranking_sql(where: str | None) -> str:
    """The best matches by BM25: store-wide when `where` is None (the postings alone), else
    joined to their rows to keep the ones in scope."""
    join, scope = ("", "") if where is None else (
        " JOIN memories m ON m.id = p.memory_id", f" WHERE {where}")
    return (f"SELECT p.memory_id, {_SCORE} AS score FROM {_STEMS} "
            f"JOIN {TABLE} p ON p.stem = w.stem{join}{scope} "
            "GROUP BY p.memory_id ORDER BY score DESC, p.memory_id LIMIT %s")


def checked_ranking_sql(where: str) -> str:
    """The first few (a parameter) of the store-wide ranking, each marked in scope or not,
    and how many the ranking holds, in one round trip."""
    return (f"WITH ranked AS MATERIALIZED ({ranking_sql(None)}) "
            "SELECT r.memory_id, r.score, EXISTS (SELECT 1 FROM memories m "
            f"WHERE m.id = r.memory_id AND {where}), r.total FROM ("
            "SELECT ranked.*, row_number() OVER (ORDER BY ranked.score DESC, ranked.memory_id) "
            "AS n, count(*) OVER () AS total FROM ranked) r WHERE r.n <= %s ORDER BY r.n")


class KeywordRanking:
    def __init__(self, read: Read, last_seq: Callable[[], int],
                 keywords: KeywordTokenizer) -> None:
        self._read = read
        self._statistics = KeywordStatistics(keywords, last_seq, self._count, self._frequency)

    def prime(self) -> None:
        self._statistics.prime()

    def ids(self, query: str, where: str, params: list[Any], top_k: int
            ) -> list[tuple[str, float]]:
        """The top_k memories in scope (`where`, `params`) holding a query stem, by BM25.
        The postings are ranked alone first and the best few checked against the scope:
        joining each of a median 2,400 matches to its row (100k memories) costs several times
        the ranking, while in a namespace holding most of the matches the first few ranked are
        in scope. When the scope holds too small a share for that, the joined query ranks the
        matches in scope only."""
        plan = self._statistics.query(query) if top_k > 0 else None
        if plan is None:
            return []
        weights = idf(plan.terms, plan.total, plan.frequency)
        stems = [plan.mean_length, list(weights), list(weights.values())]
        ranked = SCOPE_FACTOR * top_k
        # The first top_k and a quarter are checked first: usually that is all.
        for checked in (top_k + top_k // 4, ranked):
            rows = self._read(checked_ranking_sql(where),
                              [*stems, ranked, *params, checked])
            kept = [(row[0], float(row[1])) for row in rows if row[2]]
            total = int(rows[0][3]) if rows else 0
            if len(kept) >= top_k:
                return kept[:top_k]
            if total <= checked:
                break  # every ranked match was checked
        if total < ranked:
            return kept  # the ranking held every match in the store
        rows = self._read(ranking_sql(where), [*stems, *params, top_k])
        return [(row[0], float(row[1])) for row in rows]

    def _frequency(self, terms: list[str]) -> dict[str, int]:
        """Memories holding each stem, each count stopping past the budget (a range of the
        postings' primary key)."""
        counts = self._read("SELECT " + ", ".join(
            f"(SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE stem = %s LIMIT %s) c)"
            for _ in terms), [v for term in terms for v in (term, MATCH_BUDGET + 1)])[0]
        return {term: int(n) for term, n in zip(terms, counts, strict=True)}

    def _count(self) -> tuple[int, float]:
        row = self._read(
            "SELECT count(*), coalesce(sum(length(m.keywords) - length(replace(m.keywords, "
            "' ', '')) + 1) FILTER (WHERE m.keywords <> ''), 0) FROM memories m", [])[0]
        return int(row[0]), float(row[1])
