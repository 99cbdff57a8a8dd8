"""Concurrent writers through a real uvicorn on 127.0.0.1: nothing lost, nothing doubled."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from memvault.memory import Memory
from memvault.server.deps import runtime_of
from memvault.store import parse_filters

THREADS = 8


def test_concurrent_adds_are_all_stored_once(live_url: str, memory: Memory, app: Any) -> None:
    def writer(n: int) -> list[dict[str, Any]]:
        results = []
        with httpx.Client(base_url=live_url, timeout=60) as http:
            for i in range(12):
                # Every writer also adds two texts all writers share: stored once each.
                text = f"writer {n} fact {i}" if i < 10 else f"shared fact {i}"
                response = http.post("/memories", json={
                    "messages": [{"role": "user", "content": text}], "user_id": "team",
                    "infer": False})
                assert response.status_code == 200, response.text
                results.extend(response.json()["results"])
        return results

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for batch in pool.map(writer, range(THREADS)) for r in batch]
    stored = memory.store.counts()["user:team"]
    assert stored == THREADS * 10 + 2
    assert sum(r["event"] == "ADD" for r in results) == stored
    shared = {r["memory"]: set() for r in results if r["memory"].startswith("shared")}
    for r in results:
        if r["memory"] in shared:
            shared[r["memory"]].add(r["id"])
    assert all(len(ids) == 1 for ids in shared.values())  # one id per shared text
    assert sum(e.op == "ADD" for e in memory.store.journal()) == stored
    batcher = runtime_of(app).add_batcher
    assert batcher.requests == THREADS * 12
    assert batcher.batches < batcher.requests  # concurrent adds were coalesced


def test_concurrent_updates_of_one_memory_lose_nothing(live_url: str, memory: Memory) -> None:
    memory_id = memory.add("version 0", user_id="u", infer=False)["results"][0]["id"]

    def update(field: str) -> None:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            for i in range(1, 11):
                body = {"text": f"version {i}"} if field == "text" else {"metadata": {"n": i}}
                assert http.put(f"/memories/{memory_id}", json=body).status_code == 200

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(update, ["text", "metadata"]))
    final = memory.get(memory_id)
    assert (final["memory"], final["metadata"]) == ("version 10", {"n": 10})
    updates = [e for e in memory.store.history(memory_id) if e.op == "UPDATE"]
    assert len(updates) == 20
    for entry in updates:
        # Each request changed one field; a lost update shows as the other field reverting
        # to a stale value in the same journal entry.
        before, after = entry.before or {}, entry.after or {}
        changed = {k for k in ("memory", "metadata") if before.get(k) != after.get(k)}
        assert len(changed) == 1, (before, after)
    texts = [e.after["memory"] for e in updates if e.before["memory"] != e.after["memory"]]
    assert texts == [f"version {i}" for i in range(1, 11)]


def test_reads_and_deletes_alongside_writes(live_url: str, memory: Memory) -> None:
    ids = [r["id"] for r in memory.add([{"role": "user", "content": f"old note {i}"}
                                        for i in range(16)], user_id="v", infer=False)["results"]]

    def work(n: int) -> None:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            for i in range(4):
                assert http.delete(f"/memories/{ids[n * 2 + i // 2]}").status_code in (200, 404)
                found = http.post("/search", json={"query": "note", "user_id": "v"})
                assert found.status_code == 200
                added = http.post("/memories", json={
                    "messages": [{"role": "user", "content": f"new note {n}-{i}"}],
                    "user_id": "v"})
                assert added.status_code == 200

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(THREADS)))
    remaining = {r["memory"] for r in memory.get_all(user_id="v", top_k=1000)["results"]}
    assert remaining == {f"new note {n}-{i}" for n in range(THREADS) for i in range(4)}


def test_concurrent_searches_share_model_calls(
    live_url: str, memory: Memory, app: Any, local_embedder: Any
) -> None:
    memory.add([{"role": "user", "content": t} for t in
                ("I love pizza", "I play tennis on Sundays", "My sister lives in Oslo")],
               user_id="s", infer=False)
    queries = [f"{topic} question {n}" for n in range(6) for topic in ("food", "sport", "family")]

    def search(query: str) -> list[str]:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            response = http.post("/search", json={"query": query, "user_id": "s",
                                                  "threshold": None, "search_mode": "vector"})
            assert response.status_code == 200
            return [r["memory"] for r in response.json()["results"]]

    batcher = runtime_of(app).embedder
    calls_before, requests_before = batcher.calls, batcher.requests
    with ThreadPoolExecutor(THREADS) as pool:
        ranked = list(pool.map(search, queries))
    assert batcher.requests - requests_before == len(queries)
    assert batcher.calls - calls_before < len(queries)  # coalesced
    # Batching changes nothing in the answers: same ranking as an unbatched search.
    for query, ranking in zip(queries, ranked, strict=True):
        vector = local_embedder.embed([query])[0]
        hits = memory.store.search(vector, memory.embedder_identity().key,
                                   parse_filters({"user_id": "s"}), 20)
        assert ranking == [record.memory for record, _ in hits]


def test_updates_through_two_replicas_lose_nothing(
    settings: Any, memory: Memory, local_embedder: Any
) -> None:
    """Two `Memory` objects on one store stand for two processes or API replicas: they share
    no lock, only the store's write transaction."""
    memory_id = memory.add("version 0", user_id="u", infer=False)["results"][0]["id"]
    with Memory(settings, embedder=local_embedder) as replica:

        def update(field: str) -> None:
            target = memory if field == "text" else replica
            for i in range(1, 11):
                if field == "text":
                    target.update(memory_id, text=f"version {i}")
                else:
                    target.update(memory_id, metadata={"n": i})

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(update, ["text", "metadata"]))
    final = memory.get(memory_id)
    assert (final["memory"], final["metadata"]) == ("version 10", {"n": 10})
    for entry in [e for e in memory.store.history(memory_id) if e.op == "UPDATE"]:
        before, after = entry.before or {}, entry.after or {}
        changed = {k for k in ("memory", "metadata") if before.get(k) != after.get(k)}
        assert len(changed) == 1, (before, after)
