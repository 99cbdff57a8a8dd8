"""One hybrid search after its two candidate lists are in: fusion, the dates the query names,
the neighbours of the best candidates (memory/fusion.py says why each step is there)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from memvault.memory.fusion import LEADERS, REACH, Scored, dated, fuse, smooth
from memvault.memory.query_dates import made_on, mentioned_dates
from memvault.store import Store
from memvault.store.filters import Node, evaluate


def hybrid_ranking(store: Store, query: str, vector_hits: list[tuple[str, float]],
                   keyword_hits: list[tuple[str, float]], top_k: int, node: Node | None,
                   include_expired: bool, reference: date | None = None) -> list[Scored]:
    """The candidates (and lifted neighbours in the search's scope) best first; `reference`
    is the day relative words ("last year") count from, today if None."""
    scored = fuse(vector_hits, keyword_hits)
    if not scored:
        return scored
    mentions = mentioned_dates(query, reference)
    if mentions:
        # created_at of the candidates only: a query naming no date reads no rows here
        records = store.records([s.memory_id for s in scored])
        scored = dated(scored, {i: made_on(r.created_at) for i, r in records.items()},
                       mentions)
    leaders = max(LEADERS, top_k)
    near = store.neighbours([s.memory_id for s in scored[:leaders]], REACH)
    return in_scope(store, smooth(scored, near, leaders=leaders), top_k, node,
                    include_expired)


def in_scope(store: Store, ranked: list[Scored], top_k: int, node: Node | None,
             include_expired: bool) -> list[Scored]:
    """`ranked` without the lifted neighbours outside the search's scope. Both lists were
    searched within it, but a neighbour is any memory of the namespace: those that would be
    among the first top_k are checked against the filters and the expiry date."""
    today = datetime.now(UTC).date().isoformat()
    checked: set[str] = set()
    while True:
        unknown = {s.memory_id for s in ranked[:top_k] if s.vector_rank is None
                   and s.keyword_rank is None and s.memory_id not in checked}
        if not unknown:
            return ranked
        records = store.records(sorted(unknown))
        checked.update(i for i, r in records.items() if evaluate(node, r) and (
            include_expired or r.expiration_date is None or r.expiration_date >= today))
        ranked = [s for s in ranked if s.memory_id in checked or s.memory_id not in unknown]
