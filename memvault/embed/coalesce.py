"""One worker thread that takes whatever requests are waiting and handles them as one batch.

The shared mechanism of the add batcher and the embedding batcher: callers `_submit` an item
and block on its future; the worker drains the queue up to a size limit and calls `_flush`.
A lone caller waits for no one; while a batch runs, the next one gathers.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """Subclasses implement `_size(item)` and `_flush(items, futures)`; `_flush` must settle
    every future (a result or an exception), never leave one waiting."""

    thread_name = "memvault-coalescer"

    def __init__(self, max_batch: int) -> None:
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[Item, Future[Result]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _submit(self, item: Item) -> Result:
        future: Future[Result] = Future()
        with self._lock:
            if self._thread is None:  # first use, or after stop(): (re)start the worker
                self._thread = threading.Thread(target=self._run, name=self.thread_name,
                                                daemon=True)
                self._thread.start()
            self._queue.put((item, future))
        return future.result()

    def stop(self) -> None:
        """Finish what is queued and end the worker (a later call starts a new one)."""
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
            batch, size, stop = [first], self._size(first[0]), False
            while size < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
                size += self._size(more[0])
            items = [item for item, _ in batch]
            futures = [future for _, future in batch]
            try:
                self._flush(items, futures)
            except BaseException as exc:  # a bug in _flush must not strand the callers
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if stop:
                return

    def _size(self, item: Item) -> int:
        raise NotImplementedError

    def _flush(self, items: list[Item], futures: list[Future[Result]]) -> None:
        raise NotImplementedError
