"""Vector searches on PostgreSQL, three ways, each returning the exact distances of the
memories it keeps and checking the whole filter on them:

- a search pinned to a small scope (at most SMALL_SCOPE vectors of one user_id, agent_id or
  run_id) ranks the scope's binary codes from its scope index alone (scope.py) and re-scores
  the closest few with their vectors: at 1M memories a 1% user took 3.7 ms this way (recall@10
  1.0 against exact), against 25 ms walking the HNSW graph past the other 99% and 19 ms
  reading every vector in scope;
- any other search walks the embedder's partial HNSW index (iterative scan, the filter
  checked on the way);
- when a walk comes up short of top_k (a selective filter exhausted hnsw.max_scan_tuples),
  the rows in scope are ranked exactly.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from memvault.embed.base import EmbedderIdentity
from memvault.errors import InvalidInput, StoreError
from memvault.store.filters import Node, entity_constraints
from memvault.store.postgres import hnsw, scope
from memvault.store.postgres.statements import vector_search_sql

Connection = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
Where = Callable[[Node | None, bool], tuple[str, list[Any]]]

# A scope this small is ranked by its codes; a larger one walks the graph, whose cost falls as
# the scope's share of the store grows.
SMALL_SCOPE = 25_000
# Codes re-scored with their vectors: at least this many, and this many per result asked.
RESCORED_MIN = 200
RESCORED_PER_RESULT = 10
# Scope sizes are remembered this long (a size only picks the way; every way is correct).
SIZE_TTL_S = 30.0
SIZES_KEPT = 4096


def scope_sql(dims: int, embedder_key: str, key: str, where: str) -> str:
    """The nearest memories of one scope, by codes then by vectors, checked against the
    whole filter. Parameters: the id, the query, the codes kept, the query, the filter's
    parameters, top_k."""
    literal = sql.Literal(embedder_key).as_string(None).replace("%", "%%")
    query = f"%b::vector({dims})"
    return (
        "WITH codes AS MATERIALIZED (SELECT c.memory_id FROM vectors c "
        f"WHERE c.embedder_key = {literal} AND c.{key} = %s "
        f"ORDER BY c.{scope.CODE_COLUMN} <~> binary_quantize({query}) LIMIT %s), "
        "nearest AS MATERIALIZED (SELECT v.memory_id, "
        f"(v.vector::vector({dims}) <=> {query}) AS distance FROM codes "
        f"JOIN vectors v ON v.memory_id = codes.memory_id AND v.embedder_key = {literal}) "
        "SELECT n.memory_id, n.distance FROM nearest n JOIN memories m ON m.id = n.memory_id "
        f"WHERE {where} ORDER BY n.distance, n.memory_id LIMIT %s")


class ScopeSizes:
    """How many vectors an (embedder, entity key, id) holds, counted up to SMALL_SCOPE + 1
    and remembered SIZE_TTL_S: counting a large tenant's index entries on every search would
    cost it a millisecond."""

    def __init__(self, connection: Connection, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._connection = connection
        self._clock = clock
        self._sizes: OrderedDict[tuple[str, str, str], tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()  # requests share it

    def size(self, embedder_key: str, key: str, value: str) -> int:
        now = self._clock()
        known = self._sizes.get((embedder_key, key, value))
        if known is not None and now - known[1] < SIZE_TTL_S:
            return known[0]
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM vectors WHERE embedder_key = %s AND "
                f"{key} = %s LIMIT %s) s", (embedder_key, value, SMALL_SCOPE + 1)).fetchone()
        counted = int(row[0]) if row else 0
        with self._lock:
            self._sizes[(embedder_key, key, value)] = (counted, now)
            self._sizes.move_to_end((embedder_key, key, value))
            while len(self._sizes) > SIZES_KEPT:
                self._sizes.popitem(last=False)
        return counted


class VectorSearch:
    def __init__(self, connection: Connection, where: Where,
                 embedders: Callable[[], dict[str, EmbedderIdentity]], ef_search: int) -> None:
        self._connection = connection
        self._where = where
        self._embedders = embedders
        self.ef_search = ef_search
        self._sizes = ScopeSizes(connection)
        self._dims: dict[str, int] = {}

    def ids(self, query: np.ndarray, embedder_key: str, node: Node | None, top_k: int,
            threshold: float | None, include_expired: bool, candidates: bool
            ) -> list[tuple[str, float]]:
        if top_k <= 0:
            self.statement(query, embedder_key, node, 1)  # still check the query
            return []
        rows = self._in_small_scope(query, embedder_key, node, top_k, include_expired)
        if rows is None:
            rows = self._walked(query, embedder_key, node, top_k, include_expired, candidates)
        hits = [(row[0], 1.0 - float(row[-1])) for row in rows]
        if threshold is not None:
            hits = [(memory_id, score) for memory_id, score in hits if score >= threshold]
        return hits

    def _in_small_scope(self, query: np.ndarray, embedder_key: str, node: Node | None,
                        top_k: int, include_expired: bool) -> list[tuple[Any, ...]] | None:
        """The search ranked by the codes of its smallest pinned scope, or None when no
        pinned scope is small or the codes kept held too few memories passing the filter."""
        sizes = {(key, value): self._sizes.size(embedder_key, key, value)
                 for key, value in pinned_scopes(node)}
        if not sizes:
            return None
        (key, value), size = min(sizes.items(), key=lambda item: item[1])
        if size > SMALL_SCOPE:
            return None
        dims = self.dims(embedder_key)
        vector = self._checked(query, dims)
        kept = max(RESCORED_MIN, RESCORED_PER_RESULT * top_k)
        where, params = self._where(node, include_expired)
        with self._connection() as conn:
            rows = conn.execute(scope_sql(dims, embedder_key, key, where),
                                [value, vector, kept, vector, *params, top_k]).fetchall()
        if len(rows) < top_k and size > kept:
            return None  # the codes kept were not the whole scope: walk instead
        return rows

    def _walked(self, query: np.ndarray, embedder_key: str, node: Node | None, top_k: int,
                include_expired: bool, candidates: bool) -> list[tuple[Any, ...]]:
        statement, params = self.statement(query, embedder_key, node, top_k, None,
                                           include_expired)
        depth = hnsw.walk_depth(self.ef_search, top_k, candidates=candidates)
        with self._connection() as conn:
            if depth != self.ef_search:
                with conn.transaction():
                    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(depth),))
                    rows = conn.execute(statement, params).fetchall()
            else:
                rows = conn.execute(statement, params).fetchall()
            if len(rows) < top_k and (node is not None or not include_expired):
                # A selective filter can exhaust the index walk (hnsw.max_scan_tuples) before
                # top_k rows pass it. Then the matching set is small: rank it exactly, so a
                # user with few memories among millions still finds them, as on SQLite.
                statement, params = self.statement(
                    query, embedder_key, node, top_k, None, include_expired, exact=True)
                rows = conn.execute(statement, params).fetchall()
        return rows

    def statement(self, query: np.ndarray, embedder_key: str, node: Node | None, top_k: int,
                  threshold: float | None = None, include_expired: bool = True, *,
                  exact: bool = False) -> tuple[str, list[Any]]:
        """The SQL of one graph walk (or, `exact`, full ranking) and its parameters."""
        dims = self.dims(embedder_key)
        vector = self._checked(query, dims)
        filtered = node is not None or not include_expired
        where, params = self._where(node, include_expired) if filtered else ("1=1", [])
        return vector_search_sql(vector, dims, embedder_key, where, params, top_k, threshold,
                                 filtered=filtered, exact=exact)

    @staticmethod
    def _checked(query: np.ndarray, dims: int) -> np.ndarray:
        vector = np.asarray(query, dtype=np.float32)
        if vector.shape != (dims,):
            raise InvalidInput(
                f"query vector has shape {vector.shape}, the index holds {dims} dims")
        return vector

    def dims(self, embedder_key: str) -> int:
        # A key's dimension never changes once registered, so remembering it cannot go stale.
        dims = self._dims.get(embedder_key)
        if dims is None:
            identity = self._embedders().get(embedder_key)
            if identity is None:
                raise StoreError(f"embedder {embedder_key} is not registered in this store")
            dims = self._dims[embedder_key] = identity.dims
        return dims


def pinned_scopes(node: Node | None) -> Iterator[tuple[str, str]]:
    """The (entity key, id) pairs every memory the filter admits holds; ids a store cannot
    hold (NUL, as in entity_constraints' conflict mark) match nothing and are left out."""
    for key, value in entity_constraints(node).items():
        if "\x00" not in value:
            yield key, value
