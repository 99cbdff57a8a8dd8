"""Retrieval quality bench (hybrid search): LoCoMo's annotated questions, development split.

Run: .venv/bin/python -m bench.bench_locomo [--backend sqlite|postgres|both] [--tune]

Each dialog turn is stored through the public `Memory` API (the records `add(...,
infer=False)` makes, stored by `add_records`, made at the session's date as mem0's
`timestamp` would set it), one namespace (user_id) per conversation, with the turn's
speaker, session and session date in metadata. A question is a hit at k when one of its
evidence turns is among the first k results of `Memory.search` scoped to its conversation.
Categories 1-4 (5 is adversarial, unanswerable). Reported per search mode (vector = the
pure-vector baseline, in the same process on the same store), with search latency.
`--tune` also scores fusion variants offline from each list's top 100 (how the defaults in
memory/fusion.py were chosen).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_postgres import blended, cached_embeddings, corpus_texts
from bench.common import LOCOMO, latencies, real_questions, report
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory, text_hash
from memvault.memory.fusion import (
    CANDIDATES,
    LIFT,
    REACH,
    VECTOR_WEIGHT,
    SearchMode,
    dated,
    fuse,
    smooth,
)
from memvault.memory.query_dates import made_on, mentioned_dates
from memvault.store.records import MemoryRecord, utc_now

KS = (1, 5, 10)
CATEGORIES = (1, 2, 3, 4)


def load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


TEXTS: dict[str, Callable[[dict[str, Any], str | None], str]] = {
    "plain": lambda turn, date: str(turn["text"]),
    "speaker": lambda turn, date: f"{turn['speaker']}: {turn['text']}",
    "speaker-date": lambda turn, date: f"[{date}] {turn['speaker']}: {turn['text']}",
}


def session_time(date: str | None, turn: int) -> str | None:
    """LoCoMo's "1:56 pm on 8 May, 2023" as an ISO created_at, one second per turn (so the
    turns of a session keep their order), or None when the split gives no date."""
    if not date:
        return None
    moment = datetime.strptime(date.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)
    return (moment + timedelta(seconds=turn)).isoformat(timespec="microseconds")


def ingest(memory: Memory, conversations: list[dict[str, Any]], text: str = "speaker"
           ) -> dict[str, set[str]]:
    """Store every turn; memory id -> the dia_ids it holds (a repeated text is stored once).
    Each memory is made at its session's date (what mem0's `add(timestamp=...)` sets): the
    records `add(..., infer=False)` would store, with that created_at."""
    turns: dict[str, set[str]] = {}
    for conv in conversations:
        talk = conv["conversation"]
        number = 1
        while f"session_{number}" in talk:
            date = talk.get(f"session_{number}_date_time")
            for index, turn in enumerate(talk[f"session_{number}"]):
                meta = {"dia_id": turn["dia_id"], "speaker": turn["speaker"],
                        "session": number, "session_date": date}
                records = memory.verbatim_records(
                    TEXTS[text](turn, date), user_id=conv["sample_id"], metadata=meta)
                made = session_time(date, index)
                if made is not None:
                    records = [replace(r, created_at=made, updated_at=made) for r in records]
                for item in memory.add_records(records):
                    turns.setdefault(item["id"], set()).add(turn["dia_id"])
            number += 1
    return turns


def questions(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"user_id": conv["sample_id"], "question": qa["question"],
         "category": qa["category"], "evidence": set(qa.get("evidence") or [])}
        for conv in conversations for qa in conv["qa"]
        if qa.get("category") in CATEGORIES and qa.get("evidence")
    ]


def recall(ranked: list[list[str]], qs: list[dict[str, Any]], turns: dict[str, set[str]]
           ) -> dict[str, Any]:
    """R@k overall and per category, given each question's ranked memory ids."""
    hits: dict[str, list[int]] = {}
    for ids, q in zip(ranked, qs, strict=True):
        first = next((i for i, mid in enumerate(ids) if turns.get(mid, set()) & q["evidence"]),
                     None)
        for k in KS:
            hit = int(first is not None and first < k)
            hits.setdefault(f"R@{k}", []).append(hit)
            hits.setdefault(f"cat{q['category']} R@{k}", []).append(hit)
    return {name: round(sum(v) / len(v), 3) for name, v in sorted(hits.items())}


def run_modes(memory: Memory, qs: list[dict[str, Any]], turns: dict[str, set[str]]
              ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in (SearchMode.VECTOR, SearchMode.KEYWORD, SearchMode.HYBRID):
        ranked, samples = [], []
        for q in qs:
            start = time.perf_counter()
            result = memory.search(q["question"], user_id=q["user_id"], top_k=10,
                                   threshold=None, search_mode=mode.value)
            samples.append((time.perf_counter() - start) * 1000)
            ranked.append([r["id"] for r in result["results"]])
        samples.sort()
        out[mode.value] = {**recall(ranked, qs, turns),
                           "p50_ms": round(samples[len(samples) // 2], 2),
                           "p99_ms": round(samples[int(len(samples) * 0.99)], 2)}
    return out


def tune(memory: Memory, qs: list[dict[str, Any]], turns: dict[str, set[str]]
         ) -> dict[str, Any]:
    """Fusion variants scored offline from the two candidate lists of every question."""
    store, key = memory.store, memory.embedder_identity().key
    lists = []
    for q in qs:
        node = memory._scoped_filter(q["user_id"], None, None, None)
        vector = memory._embed([q["question"]])[0]
        lists.append((q["question"], store.search_ids(vector, key, node, 100, None, True),
                      store.keyword_ids(q["question"], node, 100, True)))
    made = {i: made_on(r.created_at) for i, r in store.records(list(turns)).items()}
    near = store.neighbours(list(turns))

    def rrf(v: list[tuple[str, float]], k: list[tuple[str, float]], c: int) -> list[str]:
        score: dict[str, float] = {}
        for hits in (v, k):
            for rank, (i, _) in enumerate(hits, 1):
                score[i] = score.get(i, 0.0) + 1 / (c + rank)
        return sorted(score, key=lambda i: -score[i])

    def full(query: str, v: Any, k: Any, n: int = CANDIDATES, w: float = VECTOR_WEIGHT,
             dates: bool = True, lift: float = LIFT, reach: int = REACH) -> list[str]:
        scored = fuse(v[:n], k[:n], vector_weight=w)
        if dates:
            scored = dated(scored, made, mentioned_dates(query))
        return [s.memory_id for s in smooth(scored, near, lift=lift, reach=reach)]

    variants: dict[str, Callable[[str, Any, Any], list[str]]] = {}
    for w in (0.3, 0.5, 0.7):
        variants[f"linear w={w}"] = (
            lambda q, v, k, w=w: [s.memory_id for s in fuse(v[:CANDIDATES], k[:CANDIDATES],
                                                            vector_weight=w)])
    for c in (10, 60):
        variants[f"rrf k={c}"] = lambda q, v, k, c=c: rrf(v[:CANDIDATES], k[:CANDIDATES], c)
    variants["+ smoothing only (no lift)"] = lambda q, v, k: full(q, v, k, dates=False, lift=0)
    variants["+ lift, reach 1"] = lambda q, v, k: full(q, v, k, dates=False, reach=1)
    variants["+ lift, reach 2"] = lambda q, v, k: full(q, v, k, dates=False)
    variants["+ dates (default)"] = lambda q, v, k: full(q, v, k)
    for lift in (0.8, 0.9):
        variants[f"default, lift {lift}"] = lambda q, v, k, lift=lift: full(q, v, k, lift=lift)
    for w in (0.4, 0.6):
        variants[f"default, w={w}"] = lambda q, v, k, w=w: full(q, v, k, w=w)
    for n in (30, 100):
        variants[f"default, candidates={n}"] = lambda q, v, k, n=n: full(q, v, k, n=n)
    return {name: recall([f(q, v, k) for q, v, k in lists], qs, turns)
            for name, f in variants.items()}


def bench(backend: str, url: str, root: Path, convs: list[dict[str, Any]], do_tune: bool,
          embedder: LocalEmbedder, text: str = "speaker") -> dict[str, Any]:
    settings = load_settings({"data_dir": root, "database_url": url})
    with Memory(settings, embedder=embedder) as memory:
        start = time.perf_counter()
        turns = ingest(memory, convs, text)
        added = time.perf_counter() - start
        qs = questions(convs)
        result: dict[str, Any] = {"backend": backend, "text": text, "memories": len(turns),
                                  "questions": len(qs), "ingest_s": round(added, 1),
                                  "modes": run_modes(memory, qs, turns)}
        if do_tune:
            result["tune"] = tune(memory, qs, turns)
    return result


REAL_TEXTS = 12_000


def scale_latency(url: str, root: Path, n: int, embedder: LocalEmbedder) -> dict[str, Any]:
    """Search p50/p99 per mode over `n` memories in ONE namespace, 200 real questions. The
    memories are those of bench_scale: 12,000 real LoCoMo texts embedded by the bundled model,
    the rest blends of two of one conversation (text and vector). Random vectors would make
    an HNSW graph (PostgreSQL) work far harder than text embeddings ever do."""
    settings = load_settings({"data_dir": root, "database_url": url})
    with Memory(settings, embedder=embedder) as memory:
        key = memory.embedder_identity().key
        now = utc_now()
        texts, convs = corpus_texts(min(n, REAL_TEXTS))
        real = cached_embeddings(embedder, texts, "real")
        extra, joined = blended(real, texts, convs, n - len(texts))
        texts += joined
        records = [MemoryRecord(id=str(uuid.uuid4()), memory=t, hash=text_hash(t),
                                created_at=now, updated_at=now, user_id="one", role="user")
                   for t in texts]
        start = time.perf_counter()
        memory.store.bulk_load(records, {key: np.concatenate([real, extra])})
        loaded = time.perf_counter() - start
        asked = real_questions()[:200]
        out: dict[str, Any] = {"memories": n, "bulk_load_s": round(loaded, 1)}
        # One pass first, as a running server has made it: each question's stems counted
        # once (a frequent stem's count is then kept per 1% of the store written), the
        # store's keyword figures counted.
        for question in asked:
            memory.search(question, user_id="one", top_k=10)
        for mode in SearchMode:
            figures = latencies(lambda i, mode=mode: memory.search(
                asked[i % len(asked)], user_id="one", top_k=10, search_mode=mode.value),
                len(asked))
            out[mode.value] = {k: round(v, 2) for k, v in figures.items()}
    return out


def show(result: dict[str, Any]) -> None:
    print(f"\n{result['backend']}: {result['memories']} memories, {result['questions']} "
          f"questions, ingest {result['ingest_s']} s")
    for section in ("modes", "tune"):
        for name, figures in result.get(section, {}).items():
            cats = " ".join(f"c{c}={figures[f'cat{c} R@5']:.3f}" for c in CATEGORIES)
            lat = f" p50 {figures['p50_ms']} ms p99 {figures['p99_ms']} ms" \
                if "p50_ms" in figures else ""
            print(f"  {name:14} R@1 {figures['R@1']:.3f} R@5 {figures['R@5']:.3f} "
                  f"R@10 {figures['R@10']:.3f} | @5 {cats}{lat}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--data", type=Path, default=LOCOMO)
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--scale", type=int, default=0,
                        help="also time search over this many memories in one namespace")
    parser.add_argument("--text", choices=sorted(TEXTS), default="speaker",
                        help="what a turn's memory text is (speaker: 'Name: what they said')")
    args = parser.parse_args()
    convs = load(args.data)
    embedder = LocalEmbedder()
    results = []
    root = Path(tempfile.mkdtemp(prefix="memvault-bench-locomo-"))
    try:
        if args.backend in ("sqlite", "both"):
            results.append(bench("sqlite", f"sqlite:///{root / 'm.db'}", root / "s", convs,
                                 args.tune, embedder, args.text))
            show(results[-1])
            if args.scale:
                results[-1]["scale"] = scale_latency(f"sqlite:///{root / 'big.db'}",
                                                     root / "b", args.scale, embedder)
                print(json.dumps(results[-1]["scale"], indent=1))
        if args.backend in ("postgres", "both"):
            from bench.bench_postgres import start_cluster

            server, pg_root = start_cluster()
            try:
                results.append(bench("postgres", server.get_uri(), root / "p", convs,
                                     args.tune, embedder, args.text))
                show(results[-1])
                if args.scale:
                    server.psql("CREATE DATABASE big;")
                    results[-1]["scale"] = scale_latency(server.get_uri("big"), root / "pb",
                                                         args.scale, embedder)
                    print(json.dumps(results[-1]["scale"], indent=1))
            finally:
                server.cleanup()
                shutil.rmtree(pg_root, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(report("locomo", {"results": results}))


if __name__ == "__main__":
    main()
