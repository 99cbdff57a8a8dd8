"""Keyword search on PostgreSQL: the GIN index finds the memories holding a query stem and
the same statement ranks them by BM25 with the store's figures (FTS5's IDF, the length
normalization of store/keywords.py), so both backends score alike and only the top_k ids and
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
    still_fresh,
    tsquery,
)
from memvault.store.postgres.schema import KEYWORD_INDEX_NAME, KEYWORD_VECTOR, SCHEMA

Read = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def ranking_sql(terms: int, where: str) -> str:
    """BM25 of each match as (k1 + 1) times the sum over the query stems of idf * tf /
    (tf + k1 * (1 - b + b * length / mean length)); tf counted in the token array. OFFSET 0
    keeps each LATERAL computed once per row (inlined, the split ran once per use)."""
    counts = ", ".join(f"cardinality(array_positions(x.w, %s::text))::float8 AS f{i}"
                       for i in range(terms))
    score = " + ".join(f"%s::float8 * t.f{i} / (t.f{i} + t.norm)" for i in range(terms))
    b = LENGTH_NORMALIZATION
    return (
        f"SELECT m.id, ({score}) * {K1 + 1}::float8 AS score FROM memories m "
        "CROSS JOIN LATERAL (SELECT string_to_array(m.keywords, ' ') AS w OFFSET 0) x "
        f"CROSS JOIN LATERAL (SELECT {K1}::float8 * ({1 - b}::float8 + {b}::float8 * "
        f"cardinality(x.w) / %s::float8) AS norm, {counts} OFFSET 0) t "
        f"WHERE {KEYWORD_VECTOR} @@ to_tsquery('simple', %s) AND {where} "
        "ORDER BY score DESC, m.id LIMIT %s")


# A stem the planner's statistics put in more memories than this is not counted: its count
# would stop past MATCH_BUDGET anyway, and the GIN bitmap of a stem held by 300k memories is
# built whole before the first row (30-60 ms at a million).
COMMON_FROM = 2 * MATCH_BUDGET
COMMON_STEMS_SQL = (
    "SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples "
    "FROM pg_stats s CROSS JOIN pg_class c WHERE s.schemaname = %s AND s.tablename = %s "
    "AND c.oid = (%s || '.memories')::regclass")


class CommonStems:
    """The stems in more than COMMON_FROM memories, with ANALYZE's estimate of how many
    (pg_stats' most common elements of the keyword index), read again once the journal moved
    by 1% of the store. Empty until the store was analyzed: then every stem is counted."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._stems: dict[str, int] = {}
        self._at: int | None = None  # journal seq of the last read

    def get(self, seq: int, total: int) -> dict[str, int]:
        if self._at is not None and still_fresh(self._at, seq, total):
            return self._stems
        rows = self._read(COMMON_STEMS_SQL, [SCHEMA, KEYWORD_INDEX_NAME, SCHEMA])
        stems: dict[str, int] = {}
        for elements, freqs, tuples in rows:
            if not elements or not freqs or not tuples or tuples < 0:
                continue
            for stem, share in zip(elements, freqs, strict=False):
                if share * tuples > COMMON_FROM:
                    stems[stem] = int(share * tuples)
        self._stems, self._at = stems, seq
        return stems


class KeywordRanking:
    def __init__(self, read: Read, last_seq: Callable[[], int],
                 keywords: KeywordTokenizer) -> None:
        self._read = read
        self._statistics = KeywordStatistics(keywords, last_seq, self._count, self._frequency,
                                             CommonStems(read).get)

    def ids(self, query: str, where: str, params: list[Any], top_k: int
            ) -> list[tuple[str, float]]:
        """The top_k memories in scope (`where`, `params`) holding a query stem, by BM25."""
        plan = self._statistics.query(query) if top_k > 0 else None
        if plan is None:
            return []
        weights = idf(plan.terms, plan.total, plan.frequency)
        ranked = list(weights)
        rows = self._read(ranking_sql(len(ranked), where), [
            *(weights[t] for t in ranked), plan.mean_length, *ranked, tsquery(ranked),
            *params, top_k])
        return [(row[0], float(row[1])) for row in rows]

    def _frequency(self, terms: list[str]) -> dict[str, int]:
        """Memories holding each stem, each count stopping past the budget (GIN bitmap,
        LIMIT)."""
        counts = self._read("SELECT " + ", ".join(
            f"(SELECT count(*) FROM (SELECT 1 FROM memories m WHERE {KEYWORD_VECTOR} "
            "@@ to_tsquery('simple', %s) LIMIT %s) c)" for _ in terms),
            [v for term in terms for v in (tsquery([term]), MATCH_BUDGET + 1)])[0]
        return {term: int(n) for term, n in zip(terms, counts, strict=True)}

    def _count(self) -> tuple[int, float]:
        row = self._read(
            "SELECT count(*), coalesce(sum(length(m.keywords) - length(replace(m.keywords, "
            "' ', '')) + 1) FILTER (WHERE m.keywords <> ''), 0) FROM memories m", [])[0]
        return int(row[0]), float(row[1])
