"""Server bench: `memvault serve` (real uvicorn, subprocess) on a SQLite store of 100k
memories, driven from this process by concurrent HTTP clients on 127.0.0.1.

Run: .venv/bin/python -m bench.bench_server [--memories 100000] [--clients 8]

Figures and their baselines, measured in this process on the same store:
- search: p50 latency and throughput of 8 concurrent clients through the API, against the
  same searches through an in-process `Memory` (one caller: the engine's own latency);
- add (infer=false, local embedder): memories/s of 8 concurrent clients through the API
  (the server batches concurrent adds), against one in-process caller doing `Memory.add`.
Bounded: a fixed number of requests per client (about a minute end to end).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import corpus, report, show, timer, unit_vectors
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory, text_hash
from memvault.server.run import limit_blas_threads
from memvault.store import MemoryRecord, utc_now

NAMESPACES = 10  # 10 users of 10k memories each: a search scans its user's 10k vectors
QUERIES = ["what does she like to eat", "plans for the weekend", "job interview",
           "her favourite book", "trip to the mountains", "painting class", "adopting a dog",
           "support group meeting", "camping with the kids", "a concert last week"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_store(root: Path, n: int, embedder: LocalEmbedder,
               namespaces: int = NAMESPACES) -> dict[str, Any]:
    settings = load_settings({"data_dir": root, "database_url": f"sqlite:///{root / 'mv.db'}"})
    memory = Memory(settings, embedder=embedder)
    identity = memory.embedder_identity()
    texts = corpus(n)
    vectors = unit_vectors(n, identity.dims, seed=1)
    now = utc_now()
    with timer() as loading:
        for start in range(0, n, 20_000):
            records = [
                MemoryRecord(id=str(uuid.uuid4()), memory=t, hash=text_hash(t), created_at=now,
                             updated_at=now, user_id=f"user{(start + i) % namespaces}",
                             role="user")
                for i, t in enumerate(texts[start : start + 20_000])
            ]
            memory.store.bulk_load(records, {identity.key: vectors[start : start + 20_000]})
    memory.close()
    return {"memories": n, "load_s": loading["seconds"], "settings": settings}


def in_process_baseline(settings: Any, embedder: LocalEmbedder, searches: int,
                        adds: int) -> dict[str, Any]:
    memory = Memory(settings, embedder=embedder)
    memory.search("warm up the index", user_id="user0")
    samples = []
    cpu = time.process_time()
    for i in range(searches):
        start = time.perf_counter()
        memory.search(query(-1, i), user_id=f"user{i % NAMESPACES}")
        samples.append((time.perf_counter() - start) * 1000)
    search_cpu_ms = (time.process_time() - cpu) * 1000 / searches
    cpu = time.process_time()
    with timer() as adding:
        for i in range(adds):
            memory.add(ADD_TEXTS[-1 - i], user_id="baseline", infer=False)
    add_cpu_ms = (time.process_time() - cpu) * 1000 / adds
    memory.close()
    samples.sort()
    return {"search_p50_ms": samples[len(samples) // 2],
            "search_cpu_ms": search_cpu_ms, "add_cpu_ms": add_cpu_ms,
            "search_per_s": searches / (sum(samples) / 1000),
            "add_per_s": adds / adding["seconds"]}


def start_server(root: Path, port: int, admin_key: str | None = None
                 ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEMVAULT_DATABASE_URL": f"sqlite:///{root / 'mv.db'}",
           "MEMVAULT_DATA_DIR": str(root), "MEMVAULT_BACKUP_INTERVAL": "30d",
           "MEMVAULT_JOURNAL_INTERVAL": "1h"}
    env.pop("MEMVAULT_ADMIN_API_KEY", None)
    if admin_key is not None:
        env["MEMVAULT_ADMIN_API_KEY"] = admin_key
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "memvault", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("server did not become ready in 120 s")


@contextmanager
def served_store(prefix: str, memories: int, admin_key: str | None = None
                 ) -> Iterator[tuple[str, Path, float]]:
    """A `memvault serve` over a fresh store of `memories` in one namespace, its startup work
    done: (its URL, its data folder, seconds the load took). Stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    process = None
    try:
        loaded = load_store(root, memories, LocalEmbedder(threads=1), namespaces=1)
        print(f"loaded {memories} memories in one namespace in {loaded['load_s']:.1f} s")
        port = free_port()
        process = start_server(root, port, admin_key=admin_key)
        wait_idle(process.pid)  # startup work (e.g. the first scheduled backup) is done
        yield f"http://127.0.0.1:{port}", root, loaded["load_s"]
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float = 180) -> None:
    """Until the server uses under 5% of a core for two seconds in a row."""
    deadline, calm = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and calm < 2:
        before = cpu_seconds(pid)
        time.sleep(1)
        calm = calm + 1 if cpu_seconds(pid) - before < 0.05 else 0


def drive(url: str, clients: int, per_client: int,
          request: Callable[[httpx.Client, int, int], httpx.Response],
          server_pid: int, rate: float | None = None) -> dict[str, Any]:
    """`clients` threads, each with its own connection, `per_client` requests each. Also
    the server's CPU time per request: unlike latency, it barely moves when other processes
    load the machine.

    Without `rate` each client sends its next request as soon as the last one is answered
    (closed loop: the server is saturated, and latency is clients / throughput). With `rate`
    (requests/s over all clients) each client sends on a fixed schedule and latency counts
    from the scheduled time, so a slow answer also delays (and is charged to) the requests
    queued behind it instead of hiding them (no coordinated omission)."""
    samples: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            request(http, n, -1)  # open the connection before the clock starts
            barrier.wait()
            interval = clients / rate if rate else 0.0
            first = time.perf_counter() + interval * n / clients  # clients spread evenly
            for i in range(per_client):
                start = time.perf_counter()
                if rate:
                    scheduled = first + i * interval
                    if scheduled > start:
                        time.sleep(scheduled - start)
                    start = scheduled
                try:
                    response = request(http, n, i)
                    ok = response.status_code == 200
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, problem = False, f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    samples.append(elapsed)
                    if not ok:
                        errors.append(problem)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began, cpu_before = time.perf_counter(), cpu_seconds(server_pid)
    client_before = time.process_time()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    server_cpu = cpu_seconds(server_pid) - cpu_before
    client_cpu = time.process_time() - client_before
    samples.sort()
    return {"requests": len(samples), "errors": len(errors), "first_errors": errors[:3],
            "p50_ms": samples[len(samples) // 2],
            "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
            "per_s": len(samples) / wall, "wall_s": wall,
            "server_cpu_ms_per_request": server_cpu * 1000 / max(1, len(samples)),
            "client_cpu_ms_per_request": client_cpu * 1000 / max(1, len(samples))}


def query(n: int, i: int) -> str:
    """A distinct text per request, so no layer can answer from a cache."""
    return f"{QUERIES[(n + i) % len(QUERIES)]} ({n}.{i})"


def search_request(http: httpx.Client, n: int, i: int) -> httpx.Response:
    return http.post("/search", json={"query": query(n, i),
                                      "user_id": f"user{(n + i) % NAMESPACES}", "top_k": 10})


ADD_TEXTS: list[str] = []  # real dialog turns, filled in main()


def add_request(http: httpx.Client, n: int, i: int) -> httpx.Response:
    text = ADD_TEXTS[(n * 1000 + i + 1) % len(ADD_TEXTS)]
    return http.post("/memories", json={
        "messages": [{"role": "user", "content": text}],
        "user_id": f"writer{n}", "infer": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--searches", type=int, default=100, help="per client")
    parser.add_argument("--adds", type=int, default=40, help="per client")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="searches/s over all clients in the paced run")
    args = parser.parse_args()

    limit_blas_threads()  # the baseline runs as the server does (see memvault/server/run.py)
    root = Path(tempfile.mkdtemp(prefix="mv-bench-server-"))
    process = None
    try:
        embedder = LocalEmbedder(threads=1)  # as the server runs it
        loaded = load_store(root, args.memories, embedder)
        ADD_TEXTS.extend(corpus(args.memories + 10_000)[args.memories:])
        print(f"loaded {args.memories} memories in {loaded['load_s']:.1f} s")
        baseline = in_process_baseline(loaded["settings"], embedder, searches=200, adds=100)
        del embedder  # the server process has its own model; free this one's threads
        port = free_port()
        process = start_server(root, port)
        url = f"http://127.0.0.1:{port}"
        wait_idle(process.pid)  # startup work (e.g. the first scheduled backup) is done
        drive(url, 2, 5, search_request, process.pid)  # warm-up: index load, connections
        search = drive(url, args.clients, args.searches, search_request, process.pid)
        paced = drive(url, args.clients, args.searches, search_request, process.pid,
                      rate=args.rate)
        add = drive(url, args.clients, args.adds, add_request, process.pid)
        count = httpx.get(f"{url}/status", timeout=30).json()["memories"]["total"]
        expected = args.memories + 100 + args.clients * (args.adds + 1)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        ("figure", "value", "baseline (in-process Memory, 1 caller)", "ratio"),
        (f"search p50, {args.clients} clients", f"{search['p50_ms']:.1f} ms",
         f"{baseline['search_p50_ms']:.1f} ms",
         f"{search['p50_ms'] / baseline['search_p50_ms']:.2f}x"),
        ("search p99", f"{search['p99_ms']:.1f} ms", "", ""),
        ("search throughput", f"{search['per_s']:.0f}/s", f"{baseline['search_per_s']:.0f}/s",
         f"{search['per_s'] / baseline['search_per_s']:.2f}x"),
        ("search CPU per request (server)", f"{search['server_cpu_ms_per_request']:.1f} ms",
         f"{baseline['search_cpu_ms']:.1f} ms",
         f"{search['server_cpu_ms_per_request'] / baseline['search_cpu_ms']:.2f}x"),
        ("search CPU per request (clients)", f"{search['client_cpu_ms_per_request']:.1f} ms",
         "", ""),
        ("search errors", f"{search['errors']} of {search['requests']}", "", ""),
        (f"paced search p50 / p99, {args.clients} clients sending {args.rate:.0f}/s in all",
         f"{paced['p50_ms']:.1f} / {paced['p99_ms']:.1f} ms",
         f"{baseline['search_p50_ms']:.1f} ms",
         f"{paced['p50_ms'] / baseline['search_p50_ms']:.2f}x"),
        ("paced search throughput achieved", f"{paced['per_s']:.0f}/s", "", ""),
        ("paced search errors", f"{paced['errors']} of {paced['requests']}", "", ""),
        (f"add throughput, {args.clients} clients", f"{add['per_s']:.0f}/s",
         f"{baseline['add_per_s']:.0f}/s", f"{add['per_s'] / baseline['add_per_s']:.2f}x"),
        ("add p50", f"{add['p50_ms']:.1f} ms", "", ""),
        ("add CPU per memory (server)", f"{add['server_cpu_ms_per_request']:.1f} ms",
         f"{baseline['add_cpu_ms']:.1f} ms",
         f"{add['server_cpu_ms_per_request'] / baseline['add_cpu_ms']:.2f}x"),
        ("add errors", f"{add['errors']} of {add['requests']}", "", ""),
        ("memories after the run", str(count), f"expected {expected}", ""),
    ]
    show(rows)
    targets = {"search_p50_le_25ms_at_200_per_s": paced["p50_ms"] <= 25
               and paced["per_s"] >= 0.97 * args.rate,
               "search_ge_200_per_s": search["per_s"] >= 200,
               "add_ge_80_per_s": add["per_s"] >= 80,
               "zero_errors": search["errors"] == add["errors"] == paced["errors"] == 0
               and count == expected}
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
    path = report("bench_server", {
        "memories": args.memories, "namespaces": NAMESPACES, "clients": args.clients,
        "load_s": loaded["load_s"], "baseline": baseline, "search": search,
        "paced_search": paced, "rate": args.rate, "add": add,
        "memories_after": count, "memories_expected": expected, "targets": targets})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
