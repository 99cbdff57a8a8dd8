"""Coalesce concurrent embedding calls (search queries, updates, batched adds) into few model
calls: an HTTP embedder gets one request for many texts, the bundled model runs the waiting
texts side by side on its threads. Texts of very different lengths go into separate calls: an
HTTP embedder's batch may be padded to its longest text, and padding a 10-token query to 100
tokens costs more than the batching saves (bench/bench_server.py)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import numpy as np

from memvault.embed.base import Embedder, EmbedderIdentity
from memvault.embed.coalesce import Coalescer

MAX_BATCH_TEXTS = 64
# A text joins a group when it is at most this much longer (in characters) than the group's
# shortest: padding stays under about a third.
LENGTH_RATIO = 1.3
LENGTH_SLACK = 16


class BatchingEmbedder(Coalescer[list[str], np.ndarray]):
    """An Embedder that hands every embed() to one worker, which embeds whatever is waiting,
    grouped by length. Same vectors as the wrapped embedder; a lone caller waits for no one."""

    thread_name = "memvault-embed-batcher"

    def __init__(self, inner: Embedder, max_texts: int = MAX_BATCH_TEXTS) -> None:
        super().__init__(max_texts)
        self.inner = inner
        self.calls = 0  # model calls made (for tests and the bench)
        self.requests = 0

    def identity(self) -> EmbedderIdentity:
        return self.inner.identity()

    def __getattr__(self, name: str) -> Any:  # dims, model, provider... of the wrapped one
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return self.inner.embed(texts)
        return self._submit(list(texts))

    def _size(self, item: list[str]) -> int:
        return len(item)

    def _flush(self, items: list[list[str]], futures: list[Future[np.ndarray]]) -> None:
        self.calls += 1
        self.requests += len(items)
        texts = [t for item in items for t in item]
        try:
            vectors = self._embed_grouped(texts)
        except BaseException as exc:  # every waiting caller gets the error
            for future in futures:
                future.set_exception(exc)
            return
        start = 0
        for item, future in zip(items, futures, strict=True):
            future.set_result(vectors[start : start + len(item)])
            start += len(item)

    def _embed_grouped(self, texts: list[str]) -> np.ndarray:
        """One model call per group of texts of similar length, rows in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        groups: list[list[int]] = [[order[0]]]
        for i in order[1:]:
            if len(texts[i]) > LENGTH_RATIO * len(texts[groups[-1][0]]) + LENGTH_SLACK:
                groups.append([i])
            else:
                groups[-1].append(i)
        if len(groups) == 1:
            return self.inner.embed(texts)
        parts = [self.inner.embed([texts[i] for i in group]) for group in groups]
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        for group, part in zip(groups, parts, strict=True):
            out[group] = part
        return out
