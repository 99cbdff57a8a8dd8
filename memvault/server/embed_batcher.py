"""Coalesce concurrent embedding calls (search queries, updates, batched adds) into one model
call. For a local model, one run over 8 short texts costs about what 2-3 single runs do, and
only one run at a time keeps its threads from fighting over the cores."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memvault.embed import Embedder, EmbedderIdentity

MAX_BATCH_TEXTS = 64


@dataclass
class _Pending:
    texts: list[str]
    future: Future[np.ndarray] = field(default_factory=Future)


class BatchingEmbedder:
    """An Embedder that hands every embed() to a worker, which embeds whatever is waiting in
    one call. Same vectors as the wrapped embedder; a lone caller waits for no one. With a
    single-threaded local model, one worker per core keeps every core busy under load."""

    def __init__(self, inner: Embedder, max_texts: int = MAX_BATCH_TEXTS,
                 workers: int = 1) -> None:
        self.inner = inner
        self._max_texts = max_texts
        self._workers = workers
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
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
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._run, daemon=True,
                                     name=f"memvault-embed-batcher-{n}")
                    for n in range(self._workers)
                ]
                for thread in self._threads:
                    thread.start()
            self._queue.put(pending)
        return pending.future.result()

    def stop(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
            for _ in threads:
                self._queue.put(None)
        for thread in threads:
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
        try:
            vectors = self.inner.embed([t for p in batch for t in p.texts])
        except BaseException as exc:  # every waiting caller gets the error
            for pending in batch:
                pending.future.set_exception(exc)
            return
        start = 0
        for pending in batch:
            end = start + len(pending.texts)
            pending.future.set_result(vectors[start:end])
            start = end
