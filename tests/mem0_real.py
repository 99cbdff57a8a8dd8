"""The real mem0 (the `mem0ai` package) on the test PostgreSQL + pgvector, embedding through
an OpenAI-compatible peer on 127.0.0.1: what `memvault watch mem0` guards in the tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg


def mem0_memory(dsn: str, embed_url: str, dims: int, history: Path,
                collection: str = "memories", model: str = "text-embedding-3-small") -> Any:
    """mem0's own Memory over pgvector at `dsn` (creating its table as mem0 does)."""
    os.environ["MEM0_TELEMETRY"] = "False"
    from mem0 import Memory

    return Memory.from_config({
        "vector_store": {"provider": "pgvector", "config": {
            "connection_string": dsn, "collection_name": collection,
            "embedding_model_dims": dims, "hnsw": True}},
        "embedder": {"provider": "openai", "config": {
            "model": model, "api_key": "sk-test", "openai_base_url": f"{embed_url}/v1",
            "embedding_dims": dims}},
        "llm": {"provider": "openai", "config": {"api_key": "sk-test", "model": "gpt-4o-mini"}},
        "history_db_path": str(history),
    })


def close(memory: Any) -> None:
    """mem0 keeps a connection pool open; tests end it so the database can be dropped."""
    store = memory.vector_store
    pool = getattr(store, "connection_pool", None)
    if pool is not None:
        pool.close()


def rows(dsn: str, collection: str = "memories") -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return {str(i): p for i, p in conn.execute(
            f"SELECT id, payload FROM {collection}").fetchall()}


def versions(dsn: str, collection: str = "memories") -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return {str(i): str(x) for i, x in conn.execute(
            f"SELECT id, xmin::text FROM {collection}").fetchall()}
