"""Keyword search on PostgreSQL: the GIN index finds the memories holding a query stem, and
BM25 ranks them here with the store's figures, FTS5's formula, so both backends score alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from memvault.store.keywords import MATCH_BUDGET, KeywordTokenizer, bm25, bounded_terms, tsquery
from memvault.store.postgres.schema import KEYWORD_VECTOR, SELECT, row_to_record
from memvault.store.records import MemoryRecord

Read = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class KeywordRanking:
    def __init__(self, read: Read, last_seq: Callable[[], int],
                 keywords: KeywordTokenizer) -> None:
        self._read = read
        self._last_seq = last_seq
        self.keywords = keywords
        self._stats: tuple[int, int, float] | None = None

    def search(self, query: str, where: str, params: list[Any], top_k: int
               ) -> list[tuple[MemoryRecord, float]]:
        """The top_k memories in scope (`where`, `params`) holding a query stem, by BM25."""
        terms = self.keywords.query_terms(query)
        if not terms or top_k <= 0:
            return []
        # Documents per stem, each count stopping past the budget (GIN bitmap, LIMIT)
        counts = self._read("SELECT " + ", ".join(
            f"(SELECT count(*) FROM (SELECT 1 FROM memories m WHERE {KEYWORD_VECTOR} "
            "@@ to_tsquery('simple', %s) LIMIT %s) c)" for _ in terms),
            [value for term in terms for value in (tsquery([term]), MATCH_BUDGET + 1)])[0]
        frequency = dict(zip(terms, counts, strict=True))
        terms = bounded_terms(terms, frequency)
        if not terms:
            return []
        # Every memory of the scope holding a query stem (GIN index), ranked here by BM25
        # with the store's size, mean length and stem counts: FTS5's formula and figures.
        matches = self._read(
            f"SELECT m.id, m.keywords FROM memories m WHERE {KEYWORD_VECTOR} "
            f"@@ to_tsquery('simple', %s) AND {where}", [tsquery(terms), *params])
        if not matches:
            return []
        total, mean_length = self._statistics()
        scores = bm25(terms, [row[1] for row in matches], total, mean_length, frequency)
        order = sorted(range(len(matches)), key=lambda i: (-scores[i], matches[i][0]))[:top_k]
        records = {row_to_record(row).id: row_to_record(row) for row in self._read(
            f"{SELECT} WHERE m.id = ANY(%s)", [[matches[i][0] for i in order]])}
        return [(records[matches[i][0]], scores[i]) for i in order
                if matches[i][0] in records]

    def _statistics(self) -> tuple[int, float]:
        """Memories in the store and their mean token count (FTS5 keeps these exactly),
        recounted once the journal moved by more than 1% of the store since the last count:
        a small store always, 100k memories every 1,000 writes (a count scans them all)."""
        seq = self._last_seq()
        cached = self._stats
        if cached is not None and seq - cached[0] <= cached[1] // 100:
            return cached[1], cached[2]
        row = self._read(
            "SELECT count(*), coalesce(sum(length(m.keywords) - length(replace(m.keywords, "
            "' ', '')) + 1) FILTER (WHERE m.keywords <> ''), 0) FROM memories m")[0]
        total, tokens = int(row[0]), float(row[1])
        self._stats = (seq, total, tokens / total if total else 1.0)
        return self._stats[1], self._stats[2]
