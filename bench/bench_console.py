"""Console bench: first paint of `/ui` at 100k memories, in Debian's headless Chromium against
`memvault serve` (real uvicorn, subprocess) on loopback.

Run: .venv/bin/python -m bench.bench_console [--memories 100000] [--namespaces 100] [--views 15]

The store holds the memories with their journal (one ADD entry each, as the API writes them:
the chart reads it) and one valid backup. Figures:
- first view after start: first-contentful-paint of /ui (the count history reads the whole
  journal once, in the background: the page does not wait for it), and how long after the
  server is ready the chart is there;
- later views: median and worst first-contentful-paint of /ui, and the server's time for
  GET /ui (httpx, median), against GET /status (the same report as JSON) as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.bench_server import free_port, start_server
from bench.common import corpus, report, show, timer, unit_vectors
from memvault.backup.snapshot import create_backup
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory, text_hash
from memvault.store import MemoryRecord, utc_now
from tests.console.chrome import chromium, off_loopback, requested_urls

TARGET_MS = 300.0


def load(root: Path, n: int, namespaces: int) -> float:
    settings = load_settings({"data_dir": root, "database_url": f"sqlite:///{root / 'mv.db'}"})
    with Memory(settings, embedder=LocalEmbedder()) as memory, timer() as loading:
        identity = memory.embedder_identity()
        texts, vectors, now = corpus(n), unit_vectors(n, identity.dims, seed=1), utc_now()
        for start in range(0, n, 20_000):
            records = [MemoryRecord(id=str(uuid.uuid4()), memory=t, hash=text_hash(t),
                                    created_at=now, updated_at=now,
                                    user_id=f"user{(start + i) % namespaces}", role="user")
                       for i, t in enumerate(texts[start:start + 20_000])]
            memory.store.bulk_load(records, {identity.key: vectors[start:start + 20_000]},
                                   journal=True, actor="bench")
        results = create_backup(memory.store, settings)
        assert all(r.status == "valid" for r in results), results
    return float(loading["seconds"])


def paint_ms(driver: Any, url: str) -> float:
    """First-contentful-paint of a fresh load of `url`, from the navigation's start."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 5
    while True:
        paint = driver.execute_script(
            "const e = performance.getEntriesByName('first-contentful-paint')[0];"
            "return e ? e.startTime : null")
        if paint is not None or time.monotonic() > deadline:
            return float(paint)
        time.sleep(0.05)


def server_ms(client: httpx.Client, url: str, views: int) -> float:
    samples = []
    for _ in range(views):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--views", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memvault-bench-console-") as tmp:
        root = Path(tmp)
        load_s = load(root, args.memories, args.namespaces)
        port = free_port()
        process = start_server(root, port)
        url = f"http://127.0.0.1:{port}"
        try:
            with chromium() as driver, httpx.Client(timeout=60) as client:
                driver.get(f"{url}/livez")  # the browser's own start is not the page's cost
                ready = time.perf_counter()  # /readyz answered 200
                cold_paint = paint_ms(driver, f"{url}/ui")
                cold_page = (time.perf_counter() - ready) * 1000
                while "is being read from the journal" in client.get(f"{url}/ui").text:
                    time.sleep(0.1)
                chart_after = time.perf_counter() - ready
                paints = sorted(paint_ms(driver, f"{url}/ui") for _ in range(args.views))
                leaks = off_loopback(requested_urls(driver))
                ui = server_ms(client, f"{url}/ui", args.views)
                status = server_ms(client, f"{url}/status", args.views)
        finally:
            process.terminate()
            process.wait(timeout=30)
    results = {
        "memories": args.memories, "namespaces": args.namespaces, "load_s": load_s,
        "first_view_paint_ms": cold_paint, "first_view_page_ms": cold_page,
        "chart_ready_after_start_s": chart_after,
        "paint_p50_ms": statistics.median(paints), "paint_max_ms": paints[-1],
        "ui_server_p50_ms": ui, "status_server_p50_ms": status,
        "requests_off_loopback": leaks, "target_ms": TARGET_MS,
    }
    show([("figure", "value", "baseline", "ratio"),
          ("first view: first paint", f"{cold_paint:.0f} ms", f"target {TARGET_MS:.0f} ms",
           f"{cold_paint / TARGET_MS:.2f}x"),
          ("chart shown (journal read) after ready", f"{chart_after:.1f} s", "", ""),
          ("later views: first paint p50 / max",
           f"{results['paint_p50_ms']:.0f} / {paints[-1]:.0f} ms",
           f"target {TARGET_MS:.0f} ms", f"{results['paint_p50_ms'] / TARGET_MS:.2f}x"),
          ("GET /ui server p50", f"{ui:.0f} ms", f"GET /status {status:.0f} ms",
           f"{ui / status:.2f}x"),
          ("requests to other hosts", str(len(leaks)), "0", "")])
    print(report("bench_console", results))


if __name__ == "__main__":
    main()
