"""Exact cosine search over in-memory float32 matrices, one block per namespace.

Vectors are L2-normalised on the way in, so a matrix-vector product gives cosine similarity.
A block holds one (user, agent, run) namespace; a search scans only the blocks its filter pins.

A large block is scanned in int8 first: a quarter of the bytes of float32, and the scan is
bound by memory bandwidth (100k x 384 dims: 1.8 ms instead of 5.7). The best candidates of
that scan, twice as many as asked for and at least 64 more, are then scored exactly in
float32, so the scores returned are exact; on real-text vectors the candidates held every
one of the exact top 50 (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import simsimd

Triple = tuple[str | None, str | None, str | None]

QUANTIZED_ROWS = 8_192  # a block this large is scanned in int8 before the exact scores
# Unit vectors' components rarely exceed 0.5 in magnitude (384-dim text embeddings: 0.29 at
# most in 100k); larger ones are clipped, which only costs the int8 scan some precision.
_CODE_SCALE = 127 / 0.5


def quantize(vectors: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(vectors * _CODE_SCALE), -127, 127).astype(np.int8)


def best_hits(ids: list[str], scores: np.ndarray, top_k: int, threshold: float | None = None
              ) -> list[tuple[str, float]]:
    """The best `top_k` (id, score) pairs, best first; a score below `threshold` or -inf (a
    masked row) is left out."""
    if threshold is not None:
        scores = np.where(scores >= threshold, scores, -np.inf)
    k = min(top_k, len(ids))
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]


def candidate_count(top_k: int, rows: int) -> int:
    return min(rows, max(2 * top_k, top_k + 64))


class _Block:
    def __init__(self, dims: int) -> None:
        self.matrix = np.zeros((16, dims), dtype=np.float32)
        self.codes = np.zeros((16, dims), dtype=np.int8)  # the int8 copy of `matrix`
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}

    def upsert(self, memory_id: str, vector: np.ndarray) -> None:
        row = self.rows.get(memory_id)
        if row is None:
            row = len(self.ids)
            if row == self.matrix.shape[0]:
                grown = np.zeros((row * 2, self.matrix.shape[1]), dtype=np.float32)
                grown[:row] = self.matrix
                self.matrix = grown
                codes = np.zeros((row * 2, self.matrix.shape[1]), dtype=np.int8)
                codes[:row] = self.codes[:row]
                self.codes = codes
            self.ids.append(memory_id)
            self.rows[memory_id] = row
        self.matrix[row] = vector
        self.codes[row] = quantize(np.asarray(vector, dtype=np.float32))

    def remove(self, memory_id: str) -> None:
        row = self.rows.pop(memory_id, None)
        if row is None:
            return
        last = len(self.ids) - 1
        if row != last:  # swap the last row into the hole
            moved = self.ids[last]
            self.matrix[row] = self.matrix[last]
            self.codes[row] = self.codes[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()

    def best(self, query: np.ndarray, query_codes: np.ndarray, mask: np.ndarray | None,
             top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows that may be among the block's top_k (every row of a small block) and their
        exact scores; a row outside `mask` scores -inf."""
        count = len(self.ids)
        if count < QUANTIZED_ROWS or candidate_count(top_k, count) * 4 >= count:
            rows = np.arange(count)
            scores = self.matrix[:count] @ query
        else:
            approx = np.asarray(simsimd.cdist(query_codes, self.codes[:count], metric="dot",
                                              out_dtype="float32"))[0]
            if mask is not None:
                approx = np.where(mask, approx, -np.inf)
            take = candidate_count(top_k, count)
            rows = np.argpartition(-approx, take - 1)[:take]
            scores = self.matrix[rows] @ query
        if mask is not None:
            scores = np.where(mask[rows], scores, -np.inf)
        return rows, scores


class VectorIndex:
    """All vectors of one embedder, partitioned by namespace. Not thread-safe: callers lock."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.seq = 0  # the journal seq this index reflects
        self._blocks: dict[Triple, _Block] = {}
        self._where: dict[str, Triple] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._where

    def upsert(self, memory_id: str, triple: Triple, vector: np.ndarray) -> None:
        old = self._where.get(memory_id)
        if old is not None and old != triple:
            self._blocks[old].remove(memory_id)
        block = self._blocks.get(triple)
        if block is None:
            block = self._blocks[triple] = _Block(self.dims)
        block.upsert(memory_id, vector)
        self._where[memory_id] = triple

    def load_block(self, triple: Triple, ids: list[str], matrix: np.ndarray) -> None:
        """Bulk-load a namespace that the index does not hold yet."""
        assert triple not in self._blocks, "load_block is for a fresh namespace"
        block = self._blocks[triple] = _Block(self.dims)
        block.matrix = np.array(matrix, dtype=np.float32)  # a writable copy
        block.codes = quantize(block.matrix)
        block.ids = list(ids)
        block.rows = {memory_id: row for row, memory_id in enumerate(ids)}
        for memory_id in ids:
            self._where[memory_id] = triple

    def remove(self, memory_id: str) -> None:
        triple = self._where.pop(memory_id, None)
        if triple is not None:
            self._blocks[triple].remove(memory_id)

    def clear(self) -> None:
        self._blocks.clear()
        self._where.clear()

    def search(
        self,
        query: np.ndarray,
        pinned: dict[str, str],
        top_k: int,
        threshold: float | None = None,
        allowed: set[str] | None = None,
        excluded: set[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Ids and cosine similarities, best first, over the blocks matching `pinned` ids."""
        query = np.asarray(query, dtype=np.float32)
        query_codes = quantize(query)[None, :]
        scored: list[np.ndarray] = []
        id_lists: list[list[str]] = []
        for _triple, block in self._matching(pinned):
            if not block.ids:
                continue
            mask = None
            if allowed is not None or excluded:
                mask = np.fromiter(
                    ((allowed is None or i in allowed) and not (excluded and i in excluded)
                     for i in block.ids), dtype=bool, count=len(block.ids))
            rows, scores = block.best(query, query_codes, mask, top_k)
            scored.append(scores)
            id_lists.append([block.ids[r] for r in rows] if len(rows) < len(block.ids)
                            else block.ids)
        if not scored:
            return []
        scores = np.concatenate(scored) if len(scored) > 1 else scored[0]
        ids = [i for lst in id_lists for i in lst] if len(id_lists) > 1 else id_lists[0]
        return best_hits(ids, scores, top_k, threshold)

    def _matching(self, pinned: dict[str, str]) -> Iterable[tuple[Triple, _Block]]:
        keys = ("user_id", "agent_id", "run_id")
        for triple, block in self._blocks.items():
            if all(triple[keys.index(k)] == v for k, v in pinned.items()):
                yield triple, block
