"""MCP bench: `tools/list` and `tools/call search_memories` over MCP streamable HTTP (the
official `mcp` SDK client) against `memvault serve`'s `/mcp`, beside REST `POST /search`, on a
SQLite store of 100k memories in ONE namespace (a search scans all 100k vectors).

Run: .venv/bin/python -m bench.bench_mcp [--memories 100000] [--queries 200]

One client, sequential requests, LoCoMo's real questions as queries. Each round sends the same
question to REST and to MCP, then one `tools/list`, so the three figures share conditions (the
machine's load, the server's caches). The baseline is REST `/search` in the same run; the
target is MCP search p50 - REST search p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from bench.bench_server import served_store
from bench.common import real_questions, report, show

USER = "user0"
WARMUP = 10


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"count": len(ordered), "p50_ms": ordered[len(ordered) // 2],
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "mean_ms": statistics.fmean(ordered)}


async def timed(call: Callable[[], Awaitable[Any]], into: list[float]) -> Any:
    start = time.perf_counter()
    out = await call()
    into.append((time.perf_counter() - start) * 1000)
    return out


async def measure(url: str, questions: list[str], count: int) -> dict[str, Any]:
    rest: list[float] = []
    mcp_search: list[float] = []
    mcp_list: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http, \
            streamablehttp_client(f"{url}/mcp") as (read, write, _), \
            ClientSession(read, write) as session:
        await session.initialize()
        for i in range(WARMUP + count):
            q = questions[i % len(questions)]
            r, s, t = ([], [], []) if i < WARMUP else (rest, mcp_search, mcp_list)
            response = await timed(lambda q=q: http.post(  # type: ignore[misc]
                "/search", json={"query": q, "user_id": USER, "top_k": 10}), r)
            result = await timed(lambda q=q: session.call_tool(  # type: ignore[misc]
                "search_memories", {"query": q, "user_id": USER, "top_k": 10}), s)
            tools = await timed(session.list_tools, t)
            if response.status_code != 200 or len(response.json()["results"]) != 10:
                errors.append(f"REST {response.status_code}: {response.text[:200]}")
            if result.isError or len((result.structuredContent or {}).get("results", [])) != 10:
                errors.append(f"MCP search: {str(result.content)[:200]}")
            if not any(tool.name == "search_memories" for tool in tools.tools):
                errors.append("MCP tools/list: no search_memories")
    return {"rest_search": summary(rest), "mcp_search": summary(mcp_search),
            "mcp_tools_list": summary(mcp_list), "errors": len(errors),
            "first_errors": errors[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="rounds (REST, MCP, list)")
    args = parser.parse_args()

    with served_store("mv-bench-mcp-", args.memories) as (url, _, load_s):
        load_before = os.getloadavg()
        results = anyio.run(measure, url, real_questions(), args.queries)
        load_after = os.getloadavg()

    rest, search = results["rest_search"], results["mcp_search"]
    listing = results["mcp_tools_list"]
    gap = search["p50_ms"] - rest["p50_ms"]
    ratio = search["p50_ms"] / rest["p50_ms"]
    rows = [("figure", "p50 / p99", "baseline (REST /search, same run)", "MCP - REST p50"),
            ("REST POST /search", f"{rest['p50_ms']:.1f} / {rest['p99_ms']:.1f} ms", "", ""),
            ("MCP tools/call search_memories",
             f"{search['p50_ms']:.1f} / {search['p99_ms']:.1f} ms",
             f"{rest['p50_ms']:.1f} ms", f"{gap:+.1f} ms ({ratio:.2f}x)"),
            ("MCP tools/list", f"{listing['p50_ms']:.1f} / {listing['p99_ms']:.1f} ms", "", ""),
            ("errors", f"{results['errors']} of {3 * args.queries}", "", ""),
            ("load average (1 min) before / after",
             f"{load_before[0]:.2f} / {load_after[0]:.2f}", "", "")]
    show(rows)
    targets = {"mcp_search_p50_within_5ms_of_rest": gap <= 5.0,
               "zero_errors": results["errors"] == 0}
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
    path = report("bench_mcp", {
        "memories": args.memories, "namespaces": 1, "queries": args.queries,
        "load_s": load_s, **results, "mcp_minus_rest_p50_ms": gap,
        "mcp_over_rest_p50": ratio,
        "loadavg_before": load_before, "loadavg_after": load_after, "targets": targets})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
