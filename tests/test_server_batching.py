"""The server's batchers: same results as unbatched calls, errors reach the right callers."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from memvault.embed.batching import BatchingEmbedder
from memvault.embed.http import OpenAIEmbedder
from memvault.embed.local import LocalEmbedder
from memvault.errors import EmbedderError, InvalidInput
from memvault.memory import Memory
from memvault.memory.batching import AddBatcher, _Request
from tests.peers.embedding_server import EmbeddingServer

TEXTS = ["hi", "I love pizza", "a" * 300, "what does she like to eat", "tea",
         "My sister moved to Oslo last spring and works as a nurse there. " * 3]


def test_grouped_embedding_equals_one_by_one(local_embedder: LocalEmbedder) -> None:
    batching = BatchingEmbedder(local_embedder)
    try:
        together = batching.embed(TEXTS)
        alone = np.vstack([local_embedder.embed([t]) for t in TEXTS])
        np.testing.assert_allclose(together, alone, atol=2e-3)
        assert batching.identity() is local_embedder.identity()
        assert batching.dims == local_embedder.dims
        assert batching.embed([]).shape == (0, local_embedder.dims)
    finally:
        batching.stop()


def test_concurrent_callers_share_calls_and_get_their_own_rows(
    local_embedder: LocalEmbedder,
) -> None:
    batching = BatchingEmbedder(local_embedder)
    queries = [f"question number {i} about food" for i in range(24)]
    start = threading.Barrier(8)

    def ask(i: int) -> np.ndarray:
        if i < 8:
            start.wait()
        return batching.embed([queries[i]])[0]

    try:
        with ThreadPoolExecutor(8) as pool:
            vectors = list(pool.map(ask, range(len(queries))))
        assert batching.requests == len(queries)
        assert batching.calls < len(queries)
        expected = local_embedder.embed(queries)
        np.testing.assert_allclose(np.vstack(vectors), expected, atol=2e-3)
    finally:
        batching.stop()


def test_embedder_failure_reaches_every_waiting_caller() -> None:
    with EmbeddingServer(dims=8) as peer:
        batching = BatchingEmbedder(OpenAIEmbedder("e", peer.url + "/v1", retries=0))
        try:
            peer.fail_next = [500]
            with pytest.raises(EmbedderError, match="HTTP 500"):
                batching.embed(["x"])
            assert batching.embed(["recovered"]).shape == (1, 8)  # the worker lives on
        finally:
            batching.stop()


def test_add_batch_with_one_bad_request_fails_only_that_one(memory: Memory) -> None:
    taken = memory.add("already here", user_id="u", infer=False)["results"][0]["id"]
    good = [memory.verbatim_records(f"good {i}", user_id="u") for i in range(3)]
    bad = [r.evolve(id=taken) for r in memory.verbatim_records("reuses an id", user_id="u")]
    batch = [_Request(good[0], "t"), _Request(bad, "t"), _Request(good[1], "t"),
             _Request(good[2], "other-actor")]
    futures: list[Future[Any]] = [Future() for _ in batch]
    batcher = AddBatcher(memory)
    batcher._flush(batch, futures)
    assert [f.result()[0]["memory"] for f in (futures[0], futures[2], futures[3])] == [
        "good 0", "good 1", "good 2"]
    with pytest.raises(InvalidInput):
        futures[1].result()
    assert memory.store.counts() == {"user:u": 4}
    actors = {e.after["memory"]: e.actor for e in memory.store.journal() if e.after}
    assert actors["good 2"] == "other-actor" and actors["good 0"] == "t"
