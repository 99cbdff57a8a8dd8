"""Embedders: a batch of texts in, L2-normalised float32 vectors and an identity out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memvault.embed.base import (
    PROBE_MIN_SIMILARITY,
    PROBE_TEXTS,
    Embedder,
    EmbedderIdentity,
    normalize_rows,
)

if TYPE_CHECKING:
    from memvault.config import Settings


def make_embedder(spec: str, settings: Settings) -> Embedder:
    """Build the embedder named by a spec: 'local', 'openai:<model>' or 'ollama:<model>'."""
    from memvault.errors import ConfigError

    key = settings.embedder_api_key.get_secret_value() if settings.embedder_api_key else None
    if spec == "local":
        from memvault.embed.local import LocalEmbedder

        return LocalEmbedder()
    provider, _, model = spec.partition(":")
    if provider == "openai" and model:
        from memvault.embed.http import OPENAI_DEFAULT_URL, OpenAIEmbedder

        return OpenAIEmbedder(
            model,
            settings.embedder_url or OPENAI_DEFAULT_URL,
            api_key=key,
            timeout=settings.embedder_timeout,
            batch_size=settings.embedder_batch_size,
        )
    if provider == "ollama" and model:
        from memvault.embed.http import OLLAMA_DEFAULT_URL, OllamaEmbedder

        return OllamaEmbedder(
            model,
            settings.embedder_url or OLLAMA_DEFAULT_URL,
            api_key=key,
            timeout=settings.embedder_timeout,
            batch_size=settings.embedder_batch_size,
        )
    raise ConfigError(
        f"unknown embedder {spec!r}",
        hint="use 'local', 'openai:<model>' or 'ollama:<model>' in MEMVAULT_EMBEDDER",
    )


__all__ = [
    "PROBE_MIN_SIMILARITY",
    "PROBE_TEXTS",
    "Embedder",
    "EmbedderIdentity",
    "make_embedder",
    "normalize_rows",
]
