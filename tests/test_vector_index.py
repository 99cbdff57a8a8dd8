"""The exact in-memory vector index: a large namespace is scanned in int8 first, and what it
returns is still the exact ranking, with exact scores, through every kind of change."""

from __future__ import annotations

import numpy as np

from memvault.store.vector_index import QUANTIZED_ROWS, VectorIndex

DIMS = 48
ROWS = QUANTIZED_ROWS + 4_000  # large enough for the int8 first pass
USER = ("alice", None, None)


def clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors around 40 topics, as text embeddings are (random ones have no neighbours
    worth ranking)."""
    centres = rng.standard_normal((40, DIMS))
    points = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, DIMS))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def exact(vectors: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    ids = list(vectors)
    scores = np.stack([vectors[i] for i in ids]) @ query
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def check(index: VectorIndex, vectors: dict[str, np.ndarray], queries: np.ndarray, k: int,
          allowed: set[str] | None = None) -> None:
    pool = {i: v for i, v in vectors.items() if allowed is None or i in allowed}
    found = same = 0
    for query in queries:
        got = index.search(query, {"user_id": "alice"}, k, allowed=allowed)
        for memory_id, score in got:  # exact scores, and only what is in scope
            assert memory_id in pool
            assert abs(score - float(pool[memory_id] @ query)) < 1e-5
        truth = exact(pool, query, k)
        found += len(truth)
        same += len(set(truth) & {memory_id for memory_id, _ in got})
    assert same / found >= 0.995, (same, found)


def loaded(rng: np.random.Generator) -> tuple[VectorIndex, list[str], dict[str, np.ndarray]]:
    """An index holding one large namespace, its ids and their vectors."""
    matrix = clustered(rng, ROWS)
    ids = [f"m{i}" for i in range(ROWS)]
    index = VectorIndex(DIMS)
    index.load_block(USER, ids, matrix)
    return index, ids, dict(zip(ids, matrix, strict=True))


def test_int8_first_pass_returns_the_exact_ranking() -> None:
    rng = np.random.default_rng(1)
    index, ids, vectors = loaded(rng)
    queries = clustered(rng, 40)
    for k in (1, 10, 50):
        check(index, vectors, queries, k)
    # a filter keeping 5% of the namespace: the first pass ranks only what it keeps
    allowed = set(rng.choice(ids, ROWS // 20, replace=False).tolist())
    check(index, vectors, queries, 10, allowed)


def test_removals_and_updates_keep_the_int8_copy_in_step() -> None:
    """A removal moves the last row into the hole: its int8 copy must move with it, or the
    moved memory is ranked by another one's vector and drops out of the first pass."""
    rng = np.random.default_rng(2)
    index, ids, vectors = loaded(rng)
    for memory_id in rng.choice(ids[: ROWS // 2], 3_000, replace=False).tolist():
        index.remove(memory_id)
        del vectors[memory_id]
    changed = clustered(rng, 500)
    for memory_id, vector in zip(rng.choice(list(vectors), 500, replace=False).tolist(),
                                 changed, strict=True):
        index.upsert(memory_id, USER, vector)
        vectors[memory_id] = vector
    for n, vector in enumerate(clustered(rng, 300)):
        index.upsert(f"new{n}", USER, vector)
        vectors[f"new{n}"] = vector
    # every memory is its own best match: the rows moved into holes above all
    for memory_id in [*ids[-300:], *(f"new{n}" for n in range(0, 300, 7))]:
        if memory_id in vectors:
            best = index.search(vectors[memory_id], {"user_id": "alice"}, 1)[0]
            assert best[0] == memory_id and best[1] > 0.9999, memory_id
    check(index, vectors, clustered(rng, 30), 10)


def test_a_component_beyond_the_int8_range_is_still_ranked_exactly() -> None:
    index, _, _ = loaded(np.random.default_rng(3))
    spike = np.zeros(DIMS, dtype=np.float32)
    spike[5] = 1.0  # clipped to the int8 range in the first pass
    index.upsert("spike", USER, spike)
    best = index.search(spike, {"user_id": "alice"}, 3)
    assert best[0][0] == "spike" and abs(best[0][1] - 1.0) < 1e-6
