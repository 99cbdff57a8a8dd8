"""Coalesce concurrent verbatim adds into one embed + one store transaction.

Each request thread hands its checked records to one worker and waits. While the worker
embeds and commits a batch, new requests queue up; the next round takes all of them. A lone
request pays no extra wait. Embedding 8 texts at once and fsyncing once is what lets the API
keep up with many small writers (bench/bench_server.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memvault.memory import Memory
    from memvault.store import MemoryRecord

log = logging.getLogger("memvault.server")

MAX_BATCH_RECORDS = 256


@dataclass
class _Pending:
    records: list[MemoryRecord]
    actor: str
    future: Future[list[dict[str, Any]]] = field(default_factory=Future)


class AddBatcher:
    def __init__(self, memory: Memory, max_records: int = MAX_BATCH_RECORDS) -> None:
        self._memory = memory
        self._max_records = max_records
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # rounds run (for tests and the bench)
        self.requests = 0

    def submit(self, records: list[MemoryRecord], actor: str) -> list[dict[str, Any]]:
        """Store the records (in a batch with whatever else is waiting); returns add_records'
        results for these records, or raises the error they caused."""
        pending = _Pending(records, actor)
        with self._lock:
            if self._thread is None:  # first use, or after stop(): (re)start the worker
                self._thread = threading.Thread(target=self._run, name="memvault-add-batcher",
                                                daemon=True)
                self._thread.start()
            self._queue.put(pending)
        return pending.future.result()

    def stop(self) -> None:
        """Finish what is queued and end the worker (a later submit starts a new one)."""
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
            batch, size, stop = [first], len(first.records), False
            while size < self._max_records:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
                size += len(more.records)
            self._flush(batch)
            if stop:
                return

    def _flush(self, batch: list[_Pending]) -> None:
        self.batches += 1
        self.requests += len(batch)
        # One add_records per actor (the journal records who wrote each memory).
        groups: dict[str, list[_Pending]] = {}
        for pending in batch:
            groups.setdefault(pending.actor, []).append(pending)
        for actor, group in groups.items():
            if len(group) == 1:
                self._store_alone(group[0])
                continue
            records = [r for p in group for r in p.records]
            try:
                results = self._memory.add_records(records, actor=actor)
            except Exception as exc:
                # One bad request must not fail its neighbours: retry each on its own, so
                # every caller gets its own outcome.
                log.info("batched add of %d requests failed (%s); retrying one by one",
                         len(group), type(exc).__name__)
                for pending in group:
                    self._store_alone(pending)
                continue
            start = 0
            for pending in group:
                end = start + len(pending.records)
                pending.future.set_result(results[start:end])
                start = end

    def _store_alone(self, pending: _Pending) -> None:
        try:
            pending.future.set_result(self._memory.add_records(pending.records,
                                                               actor=pending.actor))
        except BaseException as exc:  # handed to the waiting request thread
            pending.future.set_exception(exc)
