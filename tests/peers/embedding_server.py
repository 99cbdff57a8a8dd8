"""An embedding server speaking OpenAI's /v1/embeddings and Ollama's /api/embed.

Vectors are deterministic in (model, text, dims): a seeded random direction plus a bag-of-words
component, so that equal texts get equal vectors and texts sharing words are close.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from tests.peers.http_peer import HTTPPeer


def fake_vector(text: str, dims: int, model: str = "m") -> list[float]:
    vector = np.zeros(dims, dtype=np.float64)
    for word in text.lower().split():
        seed = int.from_bytes(hashlib.sha256(f"{model}:{word}".encode()).digest()[:8], "little")
        vector += np.random.default_rng(seed).standard_normal(dims)
    seed = int.from_bytes(hashlib.sha256(f"{model}|{text}".encode()).digest()[:8], "little")
    vector += 0.1 * np.random.default_rng(seed).standard_normal(dims)
    return (vector / np.linalg.norm(vector)).tolist()


class EmbeddingServer(HTTPPeer):
    def __init__(self, dims: int = 64, *, api_key: str | None = None) -> None:
        self.dims = dims
        self.api_key = api_key
        self.fail_next: list[int] = []  # HTTP statuses to answer before serving normally
        super().__init__({
            ("POST", "/v1/embeddings"): self._openai,
            ("POST", "/api/embed"): self._ollama,
        })

    def _guard(self, headers: dict[str, str]) -> tuple[int, Any] | None:
        if self.fail_next:
            return self.fail_next.pop(0), {"error": "scripted failure"}
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided"}}
        return None

    def _openai(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        failure = self._guard(headers)
        if failure:
            return failure
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(t, self.dims,
                                                                          body["model"])}
            for i, t in enumerate(texts)
        ]
        data.reverse()  # the protocol orders by `index`, not by position
        return 200, {"object": "list", "data": data, "model": body["model"],
                     "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    def _ollama(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        failure = self._guard(headers)
        if failure:
            return failure
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return 200, {"model": body["model"],
                     "embeddings": [fake_vector(t, self.dims, body["model"]) for t in texts]}
