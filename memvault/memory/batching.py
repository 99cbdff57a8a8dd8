"""Coalesce concurrent verbatim adds into one embed + one store transaction.

Each request thread hands its checked records to one worker and waits. While the worker
embeds and commits a batch, new requests queue up; the next round takes all of them. A lone
request pays no extra wait. Embedding 8 texts at once and fsyncing once is what lets the API
keep up with many small writers (bench/bench_server.py).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memvault.embed.coalesce import Coalescer

if TYPE_CHECKING:
    from memvault.memory import Memory
    from memvault.store import MemoryRecord

log = logging.getLogger("memvault.memory")

MAX_BATCH_RECORDS = 256


@dataclass
class _Request:
    records: list[MemoryRecord]
    actor: str


class AddBatcher(Coalescer[_Request, list[dict[str, Any]]]):
    thread_name = "memvault-add-batcher"

    def __init__(self, memory: Memory, max_records: int = MAX_BATCH_RECORDS) -> None:
        super().__init__(max_records)
        self._memory = memory
        self.batches = 0  # rounds run (for tests and the bench)
        self.requests = 0

    def submit(self, records: list[MemoryRecord], actor: str) -> list[dict[str, Any]]:
        """Store the records (in a batch with whatever else is waiting); returns add_records'
        results for these records, or raises the error they caused."""
        return self._submit(_Request(records, actor))

    def _size(self, item: _Request) -> int:
        return len(item.records)

    def _flush(self, items: list[_Request], futures: list[Future[list[dict[str, Any]]]]
               ) -> None:
        self.batches += 1
        self.requests += len(items)
        # One add_records per actor (the journal records who wrote each memory).
        groups: dict[str, list[tuple[_Request, Future[list[dict[str, Any]]]]]] = {}
        for item, future in zip(items, futures, strict=True):
            groups.setdefault(item.actor, []).append((item, future))
        for actor, group in groups.items():
            if len(group) == 1:
                self._store_alone(*group[0])
                continue
            records = [r for item, _ in group for r in item.records]
            try:
                results = self._memory.add_records(records, actor=actor)
            except Exception as exc:
                # One bad request must not fail its neighbours: retry each on its own, so
                # every caller gets its own outcome.
                log.info("batched add of %d requests failed (%s); retrying one by one",
                         len(group), type(exc).__name__)
                for item, future in group:
                    self._store_alone(item, future)
                continue
            start = 0
            for item, future in group:
                future.set_result(results[start : start + len(item.records)])
                start += len(item.records)

    def _store_alone(self, item: _Request, future: Future[list[dict[str, Any]]]) -> None:
        try:
            future.set_result(self._memory.add_records(item.records, actor=item.actor))
        except BaseException as exc:  # handed to the waiting request thread
            future.set_exception(exc)
