"""Coalesce concurrent embedding calls (search queries, updates, batched adds) into few model
calls. For the local model, one run over 8 short queries costs about what 4 single runs do,
and one run at a time leaves the other core to HTTP and search. Texts of very different
lengths go into separate runs: a batch is padded to its longest text, and padding a 10-token
query to 100 tokens costs more than the batching saves (bench/bench_server.py)."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memvault.embed import Embedder, EmbedderIdentity

MAX_BATCH_TEXTS = 64
# A text joins a group when it is at most this much longer (in characters) than the group's
# shortest: padding stays under about a third.
LENGTH_RATIO = 1.3
LENGTH_SLACK = 16


@dataclass
class _Pending:
    texts: list[str]
    future: Future[np.ndarray] = field(default_factory=Future)


class BatchingEmbedder:
    """An Embedder that hands every embed() to one worker, which embeds whatever is waiting,
    grouped by length. Same vectors as the wrapped embedder; a lone caller waits for no one."""

    def __init__(self, inner: Embedder, max_texts: int = MAX_BATCH_TEXTS) -> None:
        self.inner = inner
        self._max_texts = max_texts
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.calls = 0  # model calls made (for tests and the bench)
        self.requests = 0

    def identity(self) -> EmbedderIdentity:
        return self.inner.identity()

    def __getattr__(self, name: str) -> Any:  # dims, model, provider... of the wrapped one
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return self.inner.embed(texts)
        pending = _Pending(list(texts))
        with self._lock:
            if self._thread is None:  # first use, or after stop()
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="memvault-embed-batcher")
                self._thread.start()
            self._queue.put(pending)
        return pending.future.result()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, size, stop = [first], len(first.texts), False
            while size < self._max_texts:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
                size += len(more.texts)
            self._embed(batch)
            if stop:
                return

    def _embed(self, batch: list[_Pending]) -> None:
        self.calls += 1
        self.requests += len(batch)
        texts = [t for p in batch for t in p.texts]
        try:
            vectors = self._embed_grouped(texts)
        except BaseException as exc:  # every waiting caller gets the error
            for pending in batch:
                pending.future.set_exception(exc)
            return
        start = 0
        for pending in batch:
            end = start + len(pending.texts)
            pending.future.set_result(vectors[start:end])
            start = end

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
