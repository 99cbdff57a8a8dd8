"""Keyword search on SQLite: FTS5 finds and ranks the memories holding a query stem, the best
few are re-scored with BM25 as store/keywords.py defines it (FTS5's bm25() fixes the length
normalization at b = 0.75), so both backends score alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memvault.store.keywords import KeywordStatistics, KeywordTokenizer, bm25
from memvault.store.sqlite.rows import match_expression

Read = Callable[[str, list[Any]], list[tuple[Any, ...]]]
# A keyword search ranks this many times the rows it needs before checking their scope.
SCOPE_FACTOR = 4


class KeywordRanking:
    def __init__(self, read: Read, figures: Callable[[], tuple[int, float]],
                 last_seq: Callable[[], int], keywords: KeywordTokenizer) -> None:
        self._read = read  # on the keyword search's own connection
        self._statistics = KeywordStatistics(keywords, last_seq, figures, self._frequency)

    def prime(self) -> None:
        self._statistics.prime()

    def ids(self, query: str, where: str, params: list[Any], top_k: int
            ) -> list[tuple[str, float]]:
        """The top_k memories in scope (`where`, `params`) holding a query stem, by BM25."""
        plan = self._statistics.query(query) if top_k > 0 else None
        if plan is None:
            return []
        rows = self._matches(match_expression(plan.terms), where, params, 2 * top_k)
        scores = bm25(plan.terms, [row[1] for row in rows], plan.total, plan.mean_length,
                      plan.frequency)
        ranked = sorted(zip((row[0] for row in rows), scores, strict=True),
                        key=lambda hit: (-hit[1], hit[0]))
        return ranked[:top_k]

    def _matches(self, match: str, where: str, params: list[Any], wanted: int
                 ) -> list[tuple[Any, ...]]:
        """(id, keywords) of the `wanted` best matches in scope by FTS5's bm25(): twice top_k,
        so what the two rankings disagree on at the edge is rarely lost. FTS5 ranks its
        matches alone first: joining each one to its row to check the scope costs 3x the
        ranking (2,400 matches at 100k memories), while in a namespace holding most of the
        matches the first few ranked are in scope. When the namespace holds too small a share
        for that, the joined query ranks the matches in scope only."""
        ranked = self._read(
            "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? "
            "ORDER BY bm25(memories_fts) LIMIT ?", [match, SCOPE_FACTOR * wanted])
        order = {row[0]: n for n, row in enumerate(ranked)}
        rows = self._read(
            "SELECT m.id, m.keywords, m.rowid FROM memories m "
            f"WHERE m.rowid IN ({','.join('?' * len(order))}) AND {where}", [*order, *params])
        if len(rows) >= wanted or len(ranked) < SCOPE_FACTOR * wanted:
            return sorted(rows, key=lambda row: order[row[2]])[:wanted]
        return self._read(
            "SELECT m.id, m.keywords FROM memories_fts "
            "JOIN memories m ON m.rowid = memories_fts.rowid "
            f"WHERE memories_fts MATCH ? AND {where} ORDER BY bm25(memories_fts) LIMIT ?",
            [match, *params, wanted])

    def _frequency(self, terms: list[str]) -> dict[str, int]:
        marks = ",".join("?" * len(terms))
        return dict(self._read(
            f"SELECT term, doc FROM memories_fts_terms WHERE term IN ({marks})", terms))
