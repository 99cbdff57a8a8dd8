"""Prometheus metrics read from the store at scrape time (nothing cached, nothing drifts)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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
        yield from index_build_metrics(store.index_builds())
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


def index_build_metrics(builds: list[dict[str, Any]]) -> Iterator[Metric]:
    """This process's vector index builds (SQLite's approximate index, built in the background)."""
    running = GaugeMetricFamily("memvault_vector_index_building",
                                "1 while this process builds the embedder's vector index",
                                labels=["embedder"])
    runs = CounterMetricFamily("memvault_vector_index_builds",
                               "Vector index builds of this process by result (built, failed)",
                               labels=["embedder", "result"])
    last = GaugeMetricFamily("memvault_vector_index_build_last_duration_seconds",
                             "How long the last completed vector index build took",
                             labels=["embedder"])
    for build in builds:
        running.add_metric([build["embedder"]], 1 if build["state"] == "building" else 0)
        runs.add_metric([build["embedder"], "built"], build["builds"])
        runs.add_metric([build["embedder"], "failed"], build["failures"])
        if build["last_duration_s"] is not None:
            last.add_metric([build["embedder"]], build["last_duration_s"])
    yield from (running, runs, last)
