"""Prometheus metrics read from the store at scrape time (nothing cached, nothing drifts)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from memvault.memory import Memory

log = logging.getLogger("memvault.server")


class StoreCollector(Collector):
    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("memvault_store_up",
                               "1 when the store answered this scrape, else 0")
        store = self._memory.store
        try:
            meta = store.meta()
            counts = store.counts()
            vectors = store.vector_counts()
            embedders = store.embedders()
        except Exception as exc:  # a scrape reports a broken store, it does not fail
            log.error("metrics: the store did not answer: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            yield self._probe()
            return
        up.add_metric([], 1)
        yield up

        memories = GaugeMetricFamily("memvault_memories", "Memories per namespace",
                                     labels=["namespace"])
        for namespace, count in counts.items():
            memories.add_metric([namespace], count)
        yield memories

        active = meta.active_embedder
        total = sum(counts.values())
        unqueryable = GaugeMetricFamily(
            "memvault_memories_unqueryable",
            "Memories without a vector from the active embedder (invisible to search)")
        unqueryable.add_metric([], total - vectors.get(active, 0) if active else total)
        yield unqueryable

        info = GaugeMetricFamily("memvault_store_info", "The store's identity (value is 1)",
                                 labels=["store_id", "backend", "embedder", "dims"])
        dims = embedders[active].dims if active in embedders else 0
        info.add_metric([meta.store_id, meta.backend, active or "", str(dims)], 1)
        yield info
        yield self._probe()

    def _probe(self) -> Metric:
        probe = GaugeMetricFamily(
            "memvault_embedder_probe_ok",
            "1 when the configured embedder answers and matches the store's vectors, else 0")
        try:
            self._memory.embedder_identity()
            probe.add_metric([], 1)
        except Exception as exc:
            log.warning("metrics: embedder check failed: %s: %s", type(exc).__name__, exc)
            probe.add_metric([], 0)
        return probe
