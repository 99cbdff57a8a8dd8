"""The embedder protocol and the identity that tags every stored vector."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# Fixed texts whose vectors fingerprint a model: a model swapped behind the same name and size
# gives different probe vectors, so it cannot silently poison the store's ranking.
PROBE_TEXTS = (
    "memvault probe: the quick brown fox jumps over the lazy dog",
    "Alice prefers vegetarian pizza and lives in Lisbon.",
    "Remind me to renew the passport before the trip in March.",
    "SELECT count(*) FROM memories WHERE user_id = 'bob';",
)
# Cosine similarity above which two probe vectors count as the same model. Generous enough for
# float noise across CPUs and runtimes, far tighter than any two distinct models agree.
PROBE_MIN_SIMILARITY = 0.99


@dataclass(frozen=True)
class EmbedderIdentity:
    provider: str
    model: str
    dims: int
    probes: np.ndarray = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        """The stable id under which vectors are stored: provider:model:dims."""
        return f"{self.provider}:{self.model}:{self.dims}"

    @property
    def fingerprint(self) -> str:
        """A short digest of the probe vectors (rounded), for display and logs."""
        rounded = np.round(self.probes.astype(np.float64), 2).tobytes()
        return hashlib.sha256(rounded).hexdigest()[:12]

    def probe_similarity(self, other: EmbedderIdentity) -> float:
        """Lowest cosine similarity of corresponding probe vectors (-1 if shapes differ)."""
        if self.probes.shape != other.probes.shape:
            return -1.0
        a = _normalize(self.probes.astype(np.float32))
        b = _normalize(other.probes.astype(np.float32))
        return float(np.min(np.sum(a * b, axis=1)))

    def same_model(self, other: EmbedderIdentity) -> bool:
        return self.key == other.key and self.probe_similarity(other) >= PROBE_MIN_SIMILARITY

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "provider": self.provider,
            "model": self.model,
            "dims": self.dims,
            "fingerprint": self.fingerprint,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.describe(), "probes": self.probes.astype(np.float32).tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmbedderIdentity:
        return cls(
            provider=data["provider"],
            model=data["model"],
            dims=int(data["dims"]),
            probes=np.asarray(data["probes"], dtype=np.float32),
        )


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed size."""

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def identity(self) -> EmbedderIdentity: ...


def _normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """L2-normalise each row so that a dot product is a cosine similarity."""
    return _normalize(np.ascontiguousarray(matrix, dtype=np.float32)).astype(np.float32, copy=False)


class IdentityMixin:
    """Computes the identity once, from the probe texts, on first use."""

    provider: str
    model: str
    _identity: EmbedderIdentity | None = None

    def embed(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - protocol
        raise NotImplementedError

    def identity(self) -> EmbedderIdentity:
        if self._identity is None:
            probes = self.embed(list(PROBE_TEXTS))
            self._identity = EmbedderIdentity(self.provider, self.model, probes.shape[1], probes)
        return self._identity
