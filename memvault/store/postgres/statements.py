"""Search statements: a vector search built so the partial HNSW index can serve it, and the
neighbour lookup."""

from __future__ import annotations

from typing import Any

import numpy as np
from psycopg import sql

# The `reach` memories created just before (nearest first) and just after each given one in
# its namespace: the neighbour map out to `reach` steps in one statement.
NEIGHBOURS_SQL = (
    "SELECT m.id, "
    "ARRAY(SELECT p.id FROM memories p WHERE p.namespace = m.namespace AND "
    "(p.created_at, p.id) < (m.created_at, m.id) "
    "ORDER BY p.created_at DESC, p.id DESC LIMIT %s), "
    "ARRAY(SELECT n.id FROM memories n WHERE n.namespace = m.namespace AND "
    "(n.created_at, n.id) > (m.created_at, m.id) "
    "ORDER BY n.created_at, n.id LIMIT %s) "
    "FROM memories m WHERE m.id = ANY(%s)")


def vector_search_sql(query: np.ndarray, dims: int, embedder_key: str, where: str,
                      params: list[Any], top_k: int, threshold: float | None, *,
                      filtered: bool, exact: bool) -> tuple[str, list[Any]]:
    """`where`/`params`: the compiled filter ("1=1" when none). `exact` orders by an
    expression the HNSW index cannot serve: a full ranking."""
    # The expression and the literal key match the partial HNSW index of this embedder.
    distance = f"(v.vector::vector({dims}) <=> %b::vector({dims}))"
    key = sql.Literal(embedder_key).as_string(None).replace("%", "%%")
    join = "JOIN memories m ON m.id = v.memory_id " if filtered else ""
    # relaxed_order may return rows slightly out of order: re-sort the materialized top_k.
    candidates = (f"SELECT v.memory_id, {distance} AS distance "
                  f"FROM vectors v {join}WHERE v.embedder_key = {key} AND {where}")
    if exact:
        # OFFSET 0 fences the subquery: the sort above it cannot be served by the index.
        candidates = f"SELECT * FROM ({candidates} OFFSET 0) c"
    statement = (
        f"WITH nearest AS MATERIALIZED ({candidates} ORDER BY distance LIMIT %s) "
        "SELECT n.memory_id, n.distance FROM nearest n"
    )
    params = [query, *params, top_k]
    if threshold is not None:
        statement += " WHERE 1 - n.distance >= %s"
        params.append(float(threshold))
    statement += " ORDER BY n.distance, n.memory_id"
    return statement, params
