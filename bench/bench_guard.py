"""Guard bench: how fast the incident of PRODUCT.md is noticed and repaired at 100k memories.

Run: .venv/bin/python -m bench.bench_guard [--memories 100000]

A SQLite store of N memories (real LoCoMo texts, precomputed vectors under the bundled model's
identity) is backed up; then `memvault serve` (a real process) is started on a NEW empty
database with the same backup folder and a webhook receiver as its alert URL. Measured from
the moment the process is started:
- until the webhook receives `[FIRING] StoreEmpty` (detection + delivery);
- until `/readyz` answers 200 with all N memories back (auto-restore);
baseline: `memvault restore latest` of the same backup by hand (the same work without the
guard), in this process. Also the watchdog's cost: CPU per check of the store at N memories
(it runs every 5 s), against the tick interval.
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

import httpx

from bench.common import corpus, report, show, unit_vectors
from memvault.backup.restore import run_restore
from memvault.backup.snapshot import create_backup
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.guard.api import TICK_SECONDS, read_observation
from memvault.memory import Memory, text_hash
from memvault.store import MemoryRecord, utc_now
from tests.peers.http_peer import HTTPPeer
from tests.test_server_cli import free_port


def build(root: Path, n: int, embedder: LocalEmbedder) -> Any:
    settings = load_settings({"data_dir": root / "data",
                              "database_url": f"sqlite:///{root / 'old.db'}"})
    memory = Memory(settings, embedder=embedder)
    key = memory.embedder_identity().key
    texts, vectors, now = corpus(n), unit_vectors(n, 384, seed=3), utc_now()
    for start in range(0, n, 20_000):
        records = [MemoryRecord(id=str(uuid.uuid4()), memory=t, hash=text_hash(t),
                                created_at=now, updated_at=now, user_id=f"user{(start + i) % 3}")
                   for i, t in enumerate(texts[start : start + 20_000])]
        memory.store.bulk_load(records, {key: vectors[start : start + 20_000]})
    assert all(r.status == "valid" for r in create_backup(memory.store, settings))
    return settings, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=100_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mv-bench-guard-"))
    embedder = LocalEmbedder()
    try:
        _, memory = build(root, args.memories, embedder)
        before = memory.store.counts()
        observe = []
        for _ in range(20):
            started = time.process_time()
            read_observation(memory)
            observe.append((time.process_time() - started) * 1000)
        memory.close()

        # Baseline: the same restore by hand, into another new database.
        manual = load_settings({"data_dir": root / "data",
                                "database_url": f"sqlite:///{root / 'manual.db'}"})
        with Memory(manual, embedder=embedder) as target:
            started = time.perf_counter()
            run_restore(target.store, manual, embedder, "latest")
            manual_s = time.perf_counter() - started

        with HTTPPeer({("POST", "/hook"): lambda body, headers: (200, {})}) as hook:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("MEMVAULT_")}
            env.update({"MEMVAULT_DATA_DIR": str(root / "data"),
                        "MEMVAULT_DATABASE_URL": f"sqlite:///{root / 'new.db'}",
                        "MEMVAULT_ALERT_URLS": f"json://127.0.0.1:{hook.port}/hook",
                        "MEMVAULT_BACKUP_INTERVAL": "24h"})
            started = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "memvault", "serve", "--port", str(port)], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            alerted = ready = None
            try:
                while time.perf_counter() - started < 600 and ready is None:
                    if alerted is None and any(r["body"].get("title", "").startswith(
                            "[FIRING] StoreEmpty") for r in hook.requests):
                        alerted = time.perf_counter() - started
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/readyz",
                                     timeout=2).status_code == 200:
                            ready = time.perf_counter() - started
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)
                after = httpx.get(f"http://127.0.0.1:{port}/status", timeout=30).json()
            finally:
                process.terminate()
                process.wait(timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert alerted is not None and ready is not None, (alerted, ready)
    restored_ok = after["memories"]["namespaces"] == before
    observe.sort()
    tick_cpu = observe[len(observe) // 2]
    rows = [("figure", "value", "baseline", "ratio"),
            ("serve start -> webhook got [FIRING] StoreEmpty", f"{alerted:.2f} s", "", ""),
            (f"serve start -> /readyz 200, {args.memories} memories back",
             f"{ready:.2f} s", f"restore by hand {manual_s:.2f} s",
             f"{ready / manual_s:.2f}x"),
            ("counts after the automatic restore equal the original", str(restored_ok), "", ""),
            (f"watchdog CPU per check at {args.memories} memories", f"{tick_cpu:.1f} ms",
             f"tick {TICK_SECONDS:.0f} s", f"{tick_cpu / (TICK_SECONDS * 1000):.2%} of a core")]
    show(rows)
    print("written", report("bench_guard", {
        "memories": args.memories, "alert_s": alerted, "ready_s": ready,
        "manual_restore_s": manual_s, "restored_ok": restored_ok,
        "observe_cpu_ms_p50": tick_cpu, "tick_s": TICK_SECONDS}))


if __name__ == "__main__":
    main()
