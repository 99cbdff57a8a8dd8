"""Shared bench helpers: machine facts, timers, percentiles, a real-text corpus, reporting."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo-dev.json"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


def latencies(func: Callable[[int], Any], count: int, warmup: int = 5) -> dict[str, float]:
    """Call func(i) `count` times; p50/p99/mean in milliseconds."""
    for i in range(warmup):
        func(i)
    samples = []
    for i in range(count):
        start = time.perf_counter()
        func(i)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "p50_ms": samples[len(samples) // 2],
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "mean_ms": statistics.fmean(samples),
        "count": count,
    }


def real_texts(limit: int | None = None) -> list[str]:
    """Dialog turns from the LoCoMo dev split (evaluation use only), deduplicated."""
    data = json.loads(LOCOMO.read_text())
    seen: dict[str, None] = {}
    for conversation in data:
        conv = conversation["conversation"]
        for key, turns in conv.items():
            if key.startswith("session_") and isinstance(turns, list):
                for turn in turns:
                    text = (turn.get("text") or "").strip()
                    if text:
                        seen.setdefault(text, None)
    texts = list(seen)
    return texts[:limit] if limit else texts


def real_questions() -> list[str]:
    """LoCoMo's annotated questions: real queries an agent asks of its memory."""
    data = json.loads(LOCOMO.read_text())
    return [str(qa["question"]) for c in data for qa in c["qa"] if qa.get("question")]


def corpus(n: int) -> list[str]:
    """n distinct texts built from real turns (a suffix keeps repeated turns distinct)."""
    base = real_texts()
    return [base[i % len(base)] + ("" if i < len(base) else f" (#{i // len(base)})")
            for i in range(n)]


def unit_vectors(n: int, dims: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dims), dtype=np.float32)
    for start in range(0, n, 50_000):
        block = rng.standard_normal((min(50_000, n - start), dims)).astype(np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def report(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2))
    return path


def show(rows: list[tuple[str, str, str, str]]) -> None:
    """Print (figure, value, baseline, ratio) rows as a table."""
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
