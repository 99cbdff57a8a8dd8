"""Embedders behind HTTP: OpenAI-compatible /v1/embeddings and Ollama's native /api/embed."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from memvault.embed.base import IdentityMixin, normalize_rows
from memvault.errors import EmbedderError

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
OLLAMA_DEFAULT_URL = "http://127.0.0.1:11434"


class HTTPEmbedder(IdentityMixin):
    """Shared batching, timeouts and error reporting; subclasses speak one protocol."""

    path: str

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        batch_size: int = 64,
        retries: int = 2,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._batch_size = batch_size
        self._retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self.dims: int | None = None

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims or 0), dtype=np.float32)
        parts = [
            self._embed_batch(texts[start : start + self._batch_size])
            for start in range(0, len(texts), self._batch_size)
        ]
        return np.vstack(parts)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        body = self._request_body(texts)
        last_error: Exception | None = None
        for _attempt in range(self._retries + 1):
            try:
                response = self._client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                last_error = exc
                continue
            if response.status_code >= 500 or response.status_code == 429:
                last_error = EmbedderError(
                    f"embedder at {self.url} answered HTTP {response.status_code}: "
                    f"{response.text[:200]}"
                )
                continue
            if response.status_code != 200:
                raise EmbedderError(
                    f"embedder at {self.url} answered HTTP {response.status_code}: "
                    f"{response.text[:200]}",
                    hint="check MEMVAULT_EMBEDDER (model name) and MEMVAULT_EMBEDDER_API_KEY",
                )
            return self._check(self._parse(response), len(texts))
        if isinstance(last_error, EmbedderError):
            raise last_error
        raise EmbedderError(
            f"cannot reach the embedder at {self.url}: {type(last_error).__name__}: {last_error}",
            hint="check MEMVAULT_EMBEDDER_URL and that the embedding server is running",
        )

    def _check(self, vectors: list[list[float]], expected: int) -> np.ndarray:
        if len(vectors) != expected:
            raise EmbedderError(
                f"embedder at {self.url} returned {len(vectors)} vectors for {expected} texts"
            )
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbedderError(
                f"embedder at {self.url} returned malformed vectors: {exc}"
            ) from None
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise EmbedderError(f"embedder at {self.url} returned vectors of shape {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            raise EmbedderError(f"embedder at {self.url} returned non-finite values")
        if self.dims is None:
            self.dims = int(matrix.shape[1])
        elif matrix.shape[1] != self.dims:
            raise EmbedderError(
                f"embedder at {self.url} changed dimension from {self.dims} to {matrix.shape[1]}",
                hint="the model behind the endpoint was swapped; restart memvault to re-check it",
            )
        return normalize_rows(matrix)

    def _request_body(self, texts: list[str]) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _parse(self, response: httpx.Response) -> list[list[float]]:  # pragma: no cover
        raise NotImplementedError

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise EmbedderError(
                f"embedder at {self.url} answered with non-JSON: {response.text[:200]!r}"
            ) from None


class OpenAIEmbedder(HTTPEmbedder):
    provider = "openai"
    path = "/embeddings"

    def _request_body(self, texts: list[str]) -> dict[str, Any]:
        return {"model": self.model, "input": texts, "encoding_format": "float"}

    def _parse(self, response: httpx.Response) -> list[list[float]]:
        payload = self._json(response)
        try:
            items = sorted(payload["data"], key=lambda item: item.get("index", 0))
            return [item["embedding"] for item in items]
        except (KeyError, TypeError, AttributeError):
            raise EmbedderError(
                f"embedder at {self.url} answered without data[].embedding: {str(payload)[:200]}"
            ) from None


class OllamaEmbedder(HTTPEmbedder):
    provider = "ollama"
    path = "/api/embed"

    def _request_body(self, texts: list[str]) -> dict[str, Any]:
        return {"model": self.model, "input": texts}

    def _parse(self, response: httpx.Response) -> list[list[float]]:
        payload = self._json(response)
        embeddings = payload.get("embeddings") if isinstance(payload, dict) else None
        if not isinstance(embeddings, list):
            raise EmbedderError(
                f"embedder at {self.url} answered without embeddings: {str(payload)[:200]}"
            )
        return embeddings
