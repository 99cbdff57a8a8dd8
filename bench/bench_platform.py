"""mem0's own client library against memvault: `mem0ai.MemoryClient.search` (mem0's platform
API, `POST /v3/memories/search/`) beside memvault's own `MemoryClient.search` (`POST /search`),
on a SQLite store of 100k memories in ONE namespace (a search scans all 100k vectors).

Run: .venv/bin/python -m bench.bench_platform [--memories 100000] [--queries 200]

`memvault serve` in a subprocess with an admin key (mem0's client always sends one); both
clients in the bench process, sequential, LoCoMo's real questions, `top_k` 10. Each round asks
the same question through both clients, in alternating order, so both share conditions. The
baseline is memvault's `MemoryClient` in the same run; the target is mem0ai's p50 within 2 ms
of it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bench_mcp import summary
from bench.bench_server import served_store
from bench.common import real_questions, report, show
from memvault.client import MemoryClient

USER = "user0"
WARMUP = 10
ADMIN = "mv-bench-platform-admin-key"


def timed(call: Callable[[], Any], into: list[float]) -> Any:
    start = time.perf_counter()
    out = call()
    into.append((time.perf_counter() - start) * 1000)
    return out


def measure(url: str, questions: list[str], count: int, home: Path) -> dict[str, Any]:
    # No call home, and mem0's client config goes to a scratch folder, not the real HOME.
    os.environ["MEM0_TELEMETRY"] = "False"
    os.environ["MEM0_DIR"] = str(home)
    from mem0 import MemoryClient as Mem0Client

    ours: list[float] = []
    theirs: list[float] = []
    errors: list[str] = []
    mem0 = Mem0Client(api_key=ADMIN, host=url)
    with MemoryClient(url, api_key=ADMIN, timeout=60) as client:
        for i in range(WARMUP + count):
            q = questions[i % len(questions)]
            a, b = ([], []) if i < WARMUP else (ours, theirs)
            calls = [
                (lambda q=q: client.search(q, filters={"user_id": USER}, top_k=10), a),
                (lambda q=q: mem0.search(q, filters={"user_id": USER}, top_k=10), b),
            ]
            for call, into in (calls if i % 2 == 0 else calls[::-1]):
                try:
                    found = timed(call, into)  # type: ignore[arg-type]
                except Exception as exc:  # every failure is counted and shown
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                if len(found["results"]) != 10:
                    errors.append(f"{len(found['results'])} results, expected 10")
    return {"memvault_client_search": summary(ours), "mem0_client_search": summary(theirs),
            "errors": len(errors), "first_errors": errors[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="rounds (both clients)")
    args = parser.parse_args()

    with served_store("mv-bench-platform-", args.memories, admin_key=ADMIN) as (url, root, load_s):
        load_before = os.getloadavg()
        results = measure(url, real_questions(), args.queries, root / "mem0-home")
        load_after = os.getloadavg()

    ours, theirs = results["memvault_client_search"], results["mem0_client_search"]
    gap = theirs["p50_ms"] - ours["p50_ms"]
    rows = [("figure", "p50 / p99", "baseline (memvault MemoryClient, same run)",
             "mem0ai - memvault p50"),
            ("memvault MemoryClient.search", f"{ours['p50_ms']:.1f} / {ours['p99_ms']:.1f} ms",
             "", ""),
            ("mem0ai MemoryClient.search", f"{theirs['p50_ms']:.1f} / {theirs['p99_ms']:.1f} ms",
             f"{ours['p50_ms']:.1f} ms", f"{gap:+.2f} ms"),
            ("errors", f"{results['errors']} of {2 * args.queries}", "", ""),
            ("load average (1 min) before / after",
             f"{load_before[0]:.2f} / {load_after[0]:.2f}", "", "")]
    show(rows)
    targets = {"mem0_client_p50_within_2ms": gap <= 2.0, "zero_errors": results["errors"] == 0}
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
    path = report("bench_platform", {
        "memories": args.memories, "namespaces": 1, "queries": args.queries,
        "load_s": load_s, **results, "mem0_minus_memvault_p50_ms": gap,
        "loadavg_before": load_before, "loadavg_after": load_after, "targets": targets})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
