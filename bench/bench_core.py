"""Core engine bench: ingest and search on SQLite at 10k and 100k memories.

Run: .venv/bin/python -m bench.bench_core [--sizes 10000,100000] [--embed-sizes 10000]

Baselines, measured in this process on the same data:
- raw batched embedding throughput of the local model (ingest overhead = how much slower
  `Memory.add_records` is than embedding alone);
- raw numpy exact search (matrix @ query + argpartition) for search latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    corpus,
    latencies,
    real_questions,
    report,
    show,
    timer,
    unit_vectors,
)
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory, text_hash
from memvault.store import MemoryRecord, utc_now

DIMS = 384
BATCH = 1000


def records_for(texts: list[str], namespaces: int) -> list[MemoryRecord]:
    now = utc_now()
    return [
        MemoryRecord(id=str(uuid.uuid4()), memory=t, hash=text_hash(t), created_at=now,
                     updated_at=now, user_id=f"user{i % namespaces}", role="user")
        for i, t in enumerate(texts)
    ]


def open_memory(root: Path, embedder: LocalEmbedder) -> Memory:
    settings = load_settings({"data_dir": root, "database_url": f"sqlite:///{root / 'm.db'}"})
    return Memory(settings, embedder=embedder)


def bench_ingest_embedded(embedder: LocalEmbedder, n: int, root: Path) -> dict[str, Any]:
    """Alternate a raw-embedding batch and an ingest batch of equal size, so that load from
    other processes drifts both figures alike."""
    texts = corpus(n)
    memory = open_memory(root / f"embed{n}", embedder)
    memory.embedder_identity()
    records = records_for(texts, namespaces=10)
    raw_s = full_s = 0.0
    for start in range(0, n, BATCH):
        with timer() as raw:
            embedder.embed(texts[start : start + BATCH])
        with timer() as full:
            memory.add_records(records[start : start + BATCH])
        raw_s += raw["seconds"]
        full_s += full["seconds"]
    memory.close()
    return {
        "n": n,
        "raw_embed_per_s": n / raw_s,
        "ingest_per_s": n / full_s,
        "overhead": full_s / raw_s - 1,
    }


def bench_precomputed(embedder: LocalEmbedder, n: int, root: Path) -> dict[str, Any]:
    texts = corpus(n)
    matrix = unit_vectors(n, DIMS, seed=n)
    memory = open_memory(root / f"pre{n}", embedder)
    memory.embedder_identity()
    # Worst case for search: one namespace holds everything it scans.
    records = records_for(texts, namespaces=1)
    with timer() as add:
        for start in range(0, n, BATCH):
            memory.add_records(records[start : start + BATCH], matrix[start : start + BATCH])
    key = memory.embedder_identity().key
    queries = unit_vectors(200, DIMS, seed=1)
    query_texts = real_questions()[:200]
    alice = {"user_id": "user0"}

    def numpy_search(i: int) -> None:
        scores = matrix @ queries[i % len(queries)]
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]

    from memvault.store import parse_filters

    node = parse_filters(alice)
    memory.store.search(queries[0], key, node, 10)  # loads the index
    baseline = latencies(numpy_search, 200)
    store_search = latencies(
        lambda i: memory.store.search(queries[i % len(queries)], key, node, 10, 0.0, False), 200)
    full_search = latencies(
        lambda i: memory.search(query_texts[i % len(query_texts)], filters=alice, top_k=10), 200)
    embed_only = latencies(lambda i: embedder.embed([query_texts[i % len(query_texts)]]), 200)
    db_path = memory.settings.sqlite_path
    memory.close()
    return {
        "n": n,
        "add_precomputed_per_s": n / add["seconds"],
        "numpy_search": baseline,
        "store_search": store_search,
        "memory_search": full_search,
        "query_embed": embed_only,
        "db_path": str(db_path),
        "data_dir": str(root / f"pre{n}"),
    }


def bench_cold_start(db_dir: str) -> dict[str, Any]:
    env = {**os.environ, "MEMVAULT_DATA_DIR": db_dir,
           "MEMVAULT_DATABASE_URL": f"sqlite:///{db_dir}/m.db"}
    memvault = shutil.which("memvault") or str(Path(sys.executable).parent / "memvault")

    def run(cmd: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - start

    python_start = min(run([sys.executable, "-c", "pass"]) for _ in range(3))
    search = sorted(run([memvault, "search", "what did she paint", "--user-id", "user0",
                         "--json"]) for _ in range(5))
    return {"python_start_s": python_start, "search_cold_s_median": search[2],
            "search_cold_s_max": search[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--embed-sizes", default="10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    embed_sizes = [int(s) for s in args.embed_sizes.split(",") if s]
    embedder = LocalEmbedder()
    results: dict[str, Any] = {"ingest_embedded": [], "precomputed": []}
    rows = [("figure", "value", "baseline", "ratio")]
    with tempfile.TemporaryDirectory(prefix="memvault-bench-") as tmp:
        root = Path(tmp)
        for n in embed_sizes:
            r = bench_ingest_embedded(embedder, n, root)
            results["ingest_embedded"].append(r)
            rows.append((f"ingest {n} (local embedder), per s", f"{r['ingest_per_s']:.0f}",
                         f"raw embed {r['raw_embed_per_s']:.0f}/s",
                         f"overhead {r['overhead'] * 100:+.1f}%"))
        for n in sizes:
            r = bench_precomputed(embedder, n, root)
            results["precomputed"].append(r)
            rows.append((f"add {n} precomputed, per s", f"{r['add_precomputed_per_s']:.0f}",
                         "-", "-"))
            for name in ("store_search", "memory_search"):
                for q in ("p50_ms", "p99_ms"):
                    rows.append((f"{name} {n} {q}", f"{r[name][q]:.2f}",
                                 f"numpy {r['numpy_search'][q]:.2f}",
                                 f"x{r[name][q] / r['numpy_search'][q]:.2f}"))
            rows.append(("query embedding p50 ms", f"{r['query_embed']['p50_ms']:.2f}", "-",
                         "-"))
        biggest = results["precomputed"][-1]
        cold = bench_cold_start(biggest["data_dir"])
        results["cold_start"] = {"n": biggest["n"], **cold}
        rows.append((f"`memvault search` cold, {biggest['n']} memories, s",
                     f"{cold['search_cold_s_median']:.2f}",
                     f"python start {cold['python_start_s']:.2f}",
                     f"x{cold['search_cold_s_median'] / cold['python_start_s']:.1f}"))
    show(rows)
    print("written", report("core", results))


if __name__ == "__main__":
    main()
