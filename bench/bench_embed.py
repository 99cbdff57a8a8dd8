"""Embedder bench: the bundled model as memvault runs it (int8 compute, one text per run, see
memvault/embed/graph.py) against the baseline of the same weights computed as the wheel ships
them (float32, padded batches, as memvault ran it before), in this process, on real texts.

Run: .venv/bin/python -m bench.bench_embed

Figures:
- CPU per text, one core: LoCoMo questions (short: search queries) and dialog turns (adds);
- retrieval quality: LoCoMo recall@1/5/10 (each turn stored under its conversation, each
  annotated question searched; a hit when an evidence turn is in the top k), both models;
- agreement: cosine between the two models' vectors of the same text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import LOCOMO, report, show
from memvault.embed.base import normalize_rows
from memvault.embed.graph import reference_graph
from memvault.embed.local import MAX_TOKENS, LocalEmbedder, model_file

Embed = Callable[[list[str]], np.ndarray]


def reference_embedder(batch_size: int = 32) -> Embed:
    """The wheel's float32 graph, run as memvault 0.1 did: length-sorted padded batches."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from memvault.embed import local

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(reference_graph(model_file()), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    tokenizer_file = local.resources.files("memvault.embed").joinpath(
        "assets/minilm-tokenizer.json")
    tokenizer = Tokenizer.from_str(tokenizer_file.read_text(encoding="utf-8"))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed(texts: list[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            encodings = tokenizer.encode_batch([texts[i] for i in chunk])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = session.run(["last_hidden_state"], {
                "input_ids": ids, "attention_mask": mask,
                "token_type_ids": np.zeros_like(ids)})[0]
            weights = mask[:, :, None].astype(np.float32)
            out[chunk] = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        return normalize_rows(out)

    return embed


def conversations() -> list[dict[str, Any]]:
    data = json.loads(LOCOMO.read_text())
    result = []
    for conv in data:
        turns = [turn for key, value in conv["conversation"].items()
                 if key.startswith("session_") and isinstance(value, list) for turn in value]
        questions = [qa for qa in conv["qa"] if qa.get("evidence")]
        result.append({"turns": turns, "questions": questions})
    return result


def recall(embed: Embed, convs: list[dict[str, Any]]) -> dict[str, float]:
    hits = {1: 0, 5: 0, 10: 0}
    asked = 0
    for conv in convs:
        memories = embed([t["text"] for t in conv["turns"]])
        ids = [t["dia_id"] for t in conv["turns"]]
        queries = embed([str(q["question"]) for q in conv["questions"]])
        scores = queries @ memories.T
        for row, question in zip(scores, conv["questions"], strict=True):
            top = np.argsort(-row, kind="stable")[:10]
            evidence = set(question["evidence"])
            asked += 1
            for k in hits:
                hits[k] += any(ids[j] in evidence for j in top[:k])
    return {f"recall@{k}": v / asked for k, v in hits.items()} | {"questions": asked}


def cpu_ms_per_text(embed: Embed, texts: list[str], per_call: int) -> float:
    embed(texts[:per_call])  # warm-up
    start = time.process_time()
    for i in range(0, len(texts), per_call):
        embed(texts[i : i + per_call])
    return (time.process_time() - start) * 1000 / len(texts)


def main() -> None:
    convs = conversations()
    questions = [str(q["question"]) for c in convs for q in c["questions"]][:600]
    turns = [str(t["text"]) for c in convs for t in c["turns"]][:600]
    bundled = LocalEmbedder(threads=1).embed
    baseline = reference_embedder()

    speed = {
        "query_single": (cpu_ms_per_text(bundled, questions, 1),
                         cpu_ms_per_text(baseline, questions, 1)),
        "query_batch8": (cpu_ms_per_text(bundled, questions, 8),
                         cpu_ms_per_text(baseline, questions, 8)),
        "turn_batch32": (cpu_ms_per_text(bundled, turns, 32),
                         cpu_ms_per_text(baseline, turns, 32)),
    }
    quality = {"bundled": recall(bundled, convs), "baseline": recall(baseline, convs)}
    sample = questions[:300] + turns[:300]
    agreement = np.sum(bundled(sample) * baseline(sample), axis=1)

    rows = [("figure", "value (bundled, int8 compute)", "baseline (fp32 compute)", "ratio")]
    labels = {"query_single": "CPU per query, one at a time",
              "query_batch8": "CPU per query, 8 per call",
              "turn_batch32": "CPU per dialog turn, 32 per call"}
    for key, (ours, base) in speed.items():
        rows.append((labels[key], f"{ours:.2f} ms", f"{base:.2f} ms", f"{ours / base:.2f}x"))
    for k in ("recall@1", "recall@5", "recall@10"):
        ours, base = quality["bundled"][k], quality["baseline"][k]
        rows.append((f"LoCoMo {k} ({quality['bundled']['questions']:.0f} questions)",
                     f"{ours:.3f}", f"{base:.3f}", f"{ours / base:.3f}x"))
    rows.append(("cosine to the baseline's vector, min / median",
                 f"{agreement.min():.4f} / {np.median(agreement):.4f}", "", ""))
    show(rows)
    path = report("bench_embed", {
        "cpu_ms_per_text": {k: {"bundled": a, "baseline": b} for k, (a, b) in speed.items()},
        "quality": quality,
        "agreement": {"min": float(agreement.min()), "median": float(np.median(agreement))}})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
