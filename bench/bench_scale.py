"""Scale bench: N memories x 384 dims in one namespace, on SQLite and on PostgreSQL.

Run: .venv/bin/python -m bench.bench_scale --size 1000000 --json scale.json
         [--pg-size 300000] [--skip-postgres] [--questions 300] [--rebuild | --rebuild-only]

Data as in bench_postgres: 12,000 real LoCoMo texts embedded with the bundled model (cached in
bench/results/), the rest blends of two real embeddings of one conversation. 99% of the
memories belong to user0 (the searched namespace), 1% to user1 (the filtered search). Queries
are LoCoMo's real questions embedded with the same model.

Per backend, written to --json as {"sqlite": {...}, "postgres": {...}}:
- search_p50_ms / search_p99_ms: `Memory.search(question, user_id="user0", top_k=10,
  search_mode="vector")` in this process, query embedding included (hybrid alongside),
  timed after a first pass over the same questions (search_first_pass_p50_ms: the caches
  filling after the load);
- recall_at_10: `Store.search` top-10 against exact numpy top-10 of the same namespace;
- cold_start_s: a fresh `memvault search` process (median of 3; the first alongside);
- rss_mb: RSS of a `memvault serve` process after 100 searches through the API;
- load_s: bulk load (`Store.bulk_load` as a restore does it, 50k a batch) plus the index build;
- with --rebuild (--rebuild-only: nothing else after the load), "rebuild": one writer thread
  adding memories one at a time while the main thread searches (`Store.search`, user0), first
  idle for 10 s, then while the index is rebuilt in the background: writes/s, write and search
  p50/p99, the rebuild's duration and how many searches were refused meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.bench_postgres import (
    DEFAULT_EF,
    blended,
    cached_embeddings,
    corpus_texts,
    exact_top,
    quarter_of_memory,
    start_cluster,
    warm_wal,
)
from bench.bench_server import free_port, wait_idle
from bench.common import latencies, machine, real_questions, timer
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.errors import IndexBuilding
from memvault.memory import Memory, text_hash
from memvault.store import MemoryRecord, Store, parse_filters, utc_now

BATCH = 50_000
RARE_EVERY = 100  # every 100th memory belongs to user1: the 1% filter


def batches(texts: list[str], ids: list[str]) -> Iterator[list[MemoryRecord]]:
    now = utc_now()
    for start in range(0, len(ids), BATCH):
        yield [
            MemoryRecord(id=ids[row], memory=texts[row], hash=text_hash(texts[row]),
                         created_at=now, updated_at=now, role="user",
                         user_id="user1" if row % RARE_EVERY == 0 else "user0")
            for row in range(start, min(len(ids), start + BATCH))]


def load_conditions() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def measure(memory: Memory, store: Store, key: str, matrix: np.ndarray, ids: list[str],
            queries: np.ndarray, questions: list[str]) -> dict[str, Any]:
    """Latency through Memory.search, recall through Store.search, against exact numpy."""
    user0 = np.arange(len(matrix)) % RARE_EVERY != 0
    node0, node1 = parse_filters({"user_id": "user0"}), parse_filters({"user_id": "user1"})

    def recall(node: Any, mask: np.ndarray, sample: np.ndarray) -> float:
        hits = 0
        for query in sample:
            truth = {ids[int(r)] for r in exact_top(matrix, query, 10, mask)}
            hits += len(truth & {record.id for record, _ in store.search(query, key, node, 10)})
        return hits / (10 * len(sample))

    count = len(questions)
    # A first pass reads the graph's and rows' pages into the caches (a server that has been
    # answering has them there): timed and reported apart, then the steady state is timed.
    first = latencies(lambda i: memory.search(questions[i % count], user_id="user0", top_k=10,
                                              search_mode="vector"), count)
    vector = latencies(lambda i: memory.search(questions[i % count], user_id="user0", top_k=10,
                                               search_mode="vector"), count)
    hybrid = latencies(lambda i: memory.search(questions[i % count], user_id="user0", top_k=10,
                                               search_mode="hybrid"), min(count, 200))
    store_only = latencies(lambda i: store.search(queries[i % len(queries)], key, node0, 10),
                           count)
    filtered = latencies(lambda i: store.search(queries[i % len(queries)], key, node1, 10), 100)
    embed = latencies(lambda i: memory.embedder.embed([questions[i % count]]), 100)
    return {
        "search_p50_ms": vector["p50_ms"], "search_p99_ms": vector["p99_ms"],
        "search_first_pass_p50_ms": first["p50_ms"],
        "search_first_pass_p99_ms": first["p99_ms"],
        "recall_at_10": recall(node0, user0, queries),
        "hybrid_search_p50_ms": hybrid["p50_ms"], "hybrid_search_p99_ms": hybrid["p99_ms"],
        "store_search_p50_ms": store_only["p50_ms"], "store_search_p99_ms": store_only["p99_ms"],
        "filtered_1pct_p50_ms": filtered["p50_ms"], "filtered_1pct_p99_ms": filtered["p99_ms"],
        "filtered_1pct_recall_at_10": recall(node1, ~user0, queries[:100]),
        "query_embed_p50_ms": embed["p50_ms"],
        "recall_queries": len(queries),
    }


def first_index(store: Any, key: str, query: np.ndarray) -> None:
    """The first search after the load, waiting for the index build it starts (a server's
    wide searches are refused with IndexBuilding meanwhile)."""
    node = parse_filters({"user_id": "user0"})
    with contextlib.suppress(IndexBuilding):  # a namespace small enough is answered exactly
        store.search(query, key, node, 10)
    store._searchers.wait_for_build(key)
    store.search(query, key, node, 10)


def under_writes(store: Any, key: str, matrix: np.ndarray, queries: np.ndarray,
                 done: Any) -> dict[str, Any]:
    """One writer thread adding memories one at a time while this thread searches, until
    `done(searches)` says so."""
    stop, writes = threading.Event(), []
    node = parse_filters({"user_id": "user0"})

    def writer() -> None:
        rng = np.random.default_rng(len(writes))
        while not stop.is_set():
            text = f"written during the bench {uuid.uuid4()}"
            now = utc_now()
            record = MemoryRecord(id=str(uuid.uuid4()), memory=text, hash=text_hash(text),
                                  created_at=now, updated_at=now, role="user", user_id="user0")
            started = time.perf_counter()
            store.add([record], matrix[rng.integers(len(matrix))][None, :], key, None)
            writes.append(time.perf_counter() - started)

    thread = threading.Thread(target=writer)
    started = time.perf_counter()
    thread.start()
    searches: list[float] = []
    refused = 0
    while not done(searches):
        query = queries[len(searches) % len(queries)]
        begun = time.perf_counter()
        try:
            store.search(query, key, node, 10)
        except IndexBuilding:
            refused += 1
        searches.append(time.perf_counter() - begun)
    stop.set()
    thread.join()
    elapsed = time.perf_counter() - started

    def ms(values: list[float], q: float) -> float:
        return float(np.percentile(values, q) * 1000) if values else float("nan")

    return {"seconds": elapsed, "writes": len(writes), "writes_per_s": len(writes) / elapsed,
            "write_p50_ms": ms(writes, 50), "write_p99_ms": ms(writes, 99),
            "searches": len(searches), "search_p50_ms": ms(searches, 50),
            "search_p99_ms": ms(searches, 99), "searches_refused": refused}


def rebuild_phase(store: Any, key: str, matrix: np.ndarray, queries: np.ndarray
                  ) -> dict[str, Any]:
    """Writes and searches idle, then while the index is rebuilt in the background. The
    rebuild starts after one change instead of max(50,000, 5%); the overlay keeps its real
    bound (twice the real trigger), so what is measured is what a server sees."""
    from memvault.store.sqlite import ann
    from memvault.store.sqlite.ann_builder import BuildState

    idle_started = time.perf_counter()
    idle = under_writes(store, key, matrix, queries,
                        lambda s: time.perf_counter() - idle_started > 10)
    trigger = max(ann.REBUILD_MIN_CHANGES, int(ann.REBUILD_FRACTION * len(matrix)))
    saved = ann.REBUILD_MIN_CHANGES, ann.REBUILD_FRACTION, ann.OVERLAY_BOUND
    ann.REBUILD_MIN_CHANGES, ann.REBUILD_FRACTION = 1, 0.0
    ann.OVERLAY_BOUND = saved[2] * trigger
    builder = store._searchers.builder
    try:
        during = under_writes(store, key, matrix, queries, lambda s: bool(s) and (
            builder.status(key).state is not BuildState.BUILDING))
    finally:
        ann.REBUILD_MIN_CHANGES, ann.REBUILD_FRACTION, ann.OVERLAY_BOUND = saved
    status = builder.status(key)
    return {"idle": idle, "during_rebuild": during, "rebuild_s": status.last_duration_s,
            "rebuild_state": status.state.value, "builds": status.builds,
            "failures": status.failures, "conditions": load_conditions()}


def env_for(root: Path, url: str, threshold: int | None) -> dict[str, str]:
    env = {**os.environ, "MEMVAULT_DATABASE_URL": url, "MEMVAULT_DATA_DIR": str(root),
           "MEMVAULT_BACKUP_INTERVAL": "30d", "MEMVAULT_JOURNAL_INTERVAL": "1h"}
    if threshold is not None:
        env["MEMVAULT_ANN_THRESHOLD"] = str(threshold)
    env.pop("MEMVAULT_ADMIN_API_KEY", None)
    return env


def cold_start(env: dict[str, str], question: str) -> dict[str, float]:
    memvault = shutil.which("memvault") or str(Path(sys.executable).parent / "memvault")
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([memvault, "search", question, "--user-id", "user0", "--json",
                        "--search", "vector"], env=env, check=True, capture_output=True)
        runs.append(time.perf_counter() - started)
    return {"cold_start_s": statistics.median(runs), "cold_start_first_s": runs[0]}


def serve_rss(root: Path, env: dict[str, str], questions: list[str]) -> dict[str, float]:
    """RSS after 100 searches. A new store's server starts its first backup (and, after it, a
    restore drill) at once: minutes at 1M. The searches run while the backup starts; the
    drill, which restores into a scratch store of its own, has not begun yet."""
    port = free_port()
    log = (root / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "memvault", "serve", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {(root / 'serve.log').read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        ready_s = time.monotonic() - (deadline - 600)
        wait_idle(process.pid, timeout=20)
        idle_rss = psutil.Process(process.pid).memory_info().rss / 2**20
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            for i in range(100):
                client.post("/search", json={"query": questions[i % len(questions)],
                                             "user_id": "user0", "top_k": 10,
                                             "search_mode": "vector"}).raise_for_status()
        return {"rss_mb": psutil.Process(process.pid).memory_info().rss / 2**20,
                "rss_before_searches_mb": idle_rss, "serve_ready_s": ready_s}
    finally:
        process.terminate()
        try:
            process.wait(600)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sqlite_phase(root: Path, embedder: LocalEmbedder, texts: list[str], ids: list[str],
                 matrix: np.ndarray, queries: np.ndarray, questions: list[str],
                 threshold: int | None, rebuild: str | None = None) -> dict[str, Any]:
    url = f"sqlite:///{root / 'm.db'}"
    flags: dict[str, Any] = {"data_dir": root, "database_url": url}
    if threshold is not None:
        flags["ann_threshold"] = threshold
    memory = Memory(load_settings(flags), embedder=embedder)
    key = memory.embedder_identity().key
    store = memory.store
    # the same command on the empty store: Python, imports and the model, without the vectors
    empty = cold_start(env_for(root, url, threshold), questions[0])["cold_start_s"]
    with timer() as bulk:
        done = 0
        for records in batches(texts, ids):
            store.bulk_load(records, {key: matrix[done : done + len(records)]})
            done += len(records)
    with timer() as index:
        first_index(store, key, queries[0])
    print(f"sqlite: bulk load {bulk['seconds']:.0f} s, first search (index) "
          f"{index['seconds']:.0f} s ({load_conditions()})", flush=True)
    loaded = {"load_s": bulk["seconds"] + index["seconds"], "bulk_load_s": bulk["seconds"],
              "index_build_s": index["seconds"],
              "searcher": type(store._searchers.searcher(key)).__name__}  # type: ignore
    if rebuild is not None:
        loaded["rebuild"] = rebuild_phase(store, key, matrix, queries)
        print(json.dumps(loaded), flush=True)
        if rebuild == "only":
            memory.close()
            return loaded
    result = measure(memory, store, key, matrix, ids, queries, questions)
    result.update(loaded)
    memory.close()
    env = env_for(root, url, threshold)
    result.update(cold_start(env, questions[0]), cold_start_empty_store_s=empty)
    print(json.dumps(result), flush=True)  # kept in the log should the server step fail
    result.update(serve_rss(root, env, questions))
    result["index_files_mb"] = sum(p.stat().st_size for p in root.glob("m.db.vindex-*")) / 2**20
    result["conditions"] = load_conditions()
    return result


def postgres_phase(root: Path, embedder: LocalEmbedder, texts: list[str], ids: list[str],
                   matrix: np.ndarray, queries: np.ndarray, questions: list[str]
                   ) -> dict[str, Any]:
    # A million memories with their graph and postings are ~7 GB: the cluster is given
    # PostgreSQL's usual share of a dedicated machine, as a deployment that size would be.
    shared_buffers = quarter_of_memory()
    server, cluster_root = start_cluster(shared_buffers)
    try:
        warm_wal(server)
        server.psql("CREATE DATABASE bench;")
        url = server.get_uri("bench")
        memory = Memory(load_settings({"data_dir": root, "database_url": url}),
                        embedder=embedder)
        key = memory.embedder_identity().key
        store = memory.store
        empty = cold_start(env_for(root, url, None), questions[0])["cold_start_s"]
        started = time.perf_counter()
        records = [r for batch in batches(texts, ids) for r in batch]
        store.bulk_load(records, {key: matrix})
        load_s = time.perf_counter() - started
        phases = dict(getattr(store, "last_bulk_load", {}))
        del records
        print(f"postgres: bulk load + HNSW {load_s:.0f} s ({load_conditions()})", flush=True)
        result = measure(memory, store, key, matrix, ids, queries, questions)
        memory.close()
        env = env_for(root, url, None)
        result.update(cold_start(env, questions[0]), cold_start_empty_store_s=empty)
        print(json.dumps(result), flush=True)
        result.update(serve_rss(root, env, questions))
        result.update(load_s=load_s, phases=phases, ef_search=DEFAULT_EF,
                      shared_buffers=shared_buffers, conditions=load_conditions())
        return result
    finally:
        server.cleanup()
        shutil.rmtree(cluster_root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--pg-size", type=int, default=None,
                        help="PostgreSQL's size when it differs (default: --size)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--real", type=int, default=12_000)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--threshold", type=int, default=None,
                        help="MEMVAULT_ANN_THRESHOLD for the SQLite run (default: the setting's)")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--rebuild", action="store_true",
                        help="also measure writes and searches while the index is rebuilt")
    parser.add_argument("--rebuild-only", action="store_true",
                        help="after the SQLite load, measure only the rebuild phase")
    args = parser.parse_args()
    embedder = LocalEmbedder()
    real_texts, convs = corpus_texts(args.real)
    real = cached_embeddings(embedder, real_texts, "corpus")
    biggest = max(args.size, args.pg_size or 0)
    extra, extra_texts = blended(real, real_texts, convs, biggest - len(real))
    matrix = np.ascontiguousarray(np.concatenate([real, extra]))
    del extra
    texts = real_texts + extra_texts
    all_questions = real_questions()
    queries = cached_embeddings(embedder, all_questions, "questions")[: args.questions]
    questions = all_questions[: args.questions]
    ids = [str(uuid.uuid4()) for _ in range(biggest)]
    results: dict[str, Any] = {"machine": machine(), "dims": int(matrix.shape[1]),
                               "real_embedded": len(real), "questions": len(questions)}
    print(f"{biggest} memories ({len(real)} embedded real texts, the rest blends); "
          f"{len(questions)} real questions ({load_conditions()})", flush=True)
    for name, size in (("sqlite", args.size), ("postgres", args.pg_size or args.size)):
        if (name == "sqlite" and args.skip_sqlite) or (name == "postgres" and args.skip_postgres):
            continue
        root = Path(tempfile.mkdtemp(prefix=f"memvault-scale-{name}-"))
        try:
            if name == "sqlite":
                rebuild = "only" if args.rebuild_only else "too" if args.rebuild else None
                result = sqlite_phase(root, embedder, texts[:size], ids[:size], matrix[:size],
                                      queries, questions, args.threshold, rebuild)
            else:
                result = postgres_phase(root, embedder, texts[:size], ids[:size], matrix[:size],
                                        queries, questions)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        results[name] = {"n": size, **result}
        args.json.write_text(json.dumps(results, indent=2))
        print(json.dumps({name: results[name]}, indent=2), flush=True)
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
