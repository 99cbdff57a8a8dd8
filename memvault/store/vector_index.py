"""Exact cosine search over in-memory float32 matrices, one block per namespace.

Vectors are L2-normalised on the way in, so a matrix-vector product gives cosine similarity.
A block holds one (user, agent, run) namespace; a search scans only the blocks its filter pins.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Triple = tuple[str | None, str | None, str | None]


class _Block:
    def __init__(self, dims: int) -> None:
        self.matrix = np.zeros((16, dims), dtype=np.float32)
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
            self.ids.append(memory_id)
            self.rows[memory_id] = row
        self.matrix[row] = vector

    def remove(self, memory_id: str) -> None:
        row = self.rows.pop(memory_id, None)
        if row is None:
            return
        last = len(self.ids) - 1
        if row != last:  # swap the last row into the hole
            moved = self.ids[last]
            self.matrix[row] = self.matrix[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()

    def scores(self, query: np.ndarray) -> np.ndarray:
        return self.matrix[: len(self.ids)] @ query


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
        candidates: list[np.ndarray] = []
        id_lists: list[list[str]] = []
        for _triple, block in self._matching(pinned):
            if block.ids:
                candidates.append(block.scores(query))
                id_lists.append(block.ids)
        if not candidates:
            return []
        scores = np.concatenate(candidates) if len(candidates) > 1 else candidates[0]
        ids = [i for lst in id_lists for i in lst] if len(id_lists) > 1 else id_lists[0]
        if allowed is not None or excluded:
            mask = np.fromiter(
                (
                    (allowed is None or i in allowed) and not (excluded and i in excluded)
                    for i in ids
                ),
                dtype=bool,
                count=len(ids),
            )
            scores = np.where(mask, scores, -np.inf)
        if threshold is not None:
            scores = np.where(scores >= threshold, scores, -np.inf)
        k = min(top_k, len(ids))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]

    def _matching(self, pinned: dict[str, str]) -> Iterable[tuple[Triple, _Block]]:
        keys = ("user_id", "agent_id", "run_id")
        for triple, block in self._blocks.items():
            if all(triple[keys.index(k)] == v for k, v in pinned.items()):
                yield triple, block
