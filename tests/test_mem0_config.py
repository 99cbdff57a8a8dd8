"""mem0's config dicts (as in mem0's docs) either map to what they mean or are refused with a
ConfigError naming the key: never a silent fallback to a local SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memvault.errors import ConfigError
from memvault.memory import Memory
from memvault.memory.mem0_config import translate


def test_pgvector_fields_make_a_postgres_url() -> None:
    config = {"vector_store": {"provider": "pgvector", "config": {
        "user": "mem0", "password": "p@ss/word", "host": "db", "port": 5432,
        "dbname": "memories"}}}
    assert translate(config)["database_url"] == \
        "postgresql://mem0:p%40ss%2Fword@db:5432/memories"


def test_pgvector_fields_open_the_real_postgres(pg_url: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    memory = Memory.from_config({
        "data_dir": str(tmp_path),
        "vector_store": {"provider": "pgvector", "config": {
            "user": url.username, "password": url.password,
            "host": url.host or url.query.get("host"), "port": url.port or url.query.get("port"),
            "dbname": url.database}}})
    with memory:
        assert memory.settings.database_url.startswith("postgresql://")
        memory.add("stored in postgres", user_id="u", infer=False)
        assert memory.get_all(user_id="u")["results"][0]["memory"] == "stored in postgres"
    assert not list(tmp_path.glob("**/*.db"))  # no local SQLite file on the side


@pytest.mark.parametrize(("config", "named"), [
    ({"vector_store": {"provider": "pgvector", "config": {
        "host": "db", "dbname": "m", "collection_name": "memories"}}}, "collection_name"),
    ({"vector_store": {"provider": "pgvector", "config": {"user": "mem0"}}}, "host and"),
    ({"vector_store": {"provider": "qdrant", "config": {"host": "q", "port": 6333}}}, "qdrant"),
    ({"vector_store": {"provider": "qdrant", "config": {"path": "/tmp/qdrant"}}}, "qdrant"),
    ({"vector_store": {"config": {"path": "/tmp/qdrant"}}}, "None"),
    ({"vector_store": {"provider": "sqlite", "config": {"path": "m.db", "x": 1}}}, "'x'"),
    ({"graph_store": {"provider": "neo4j"}}, "graph_store"),
    ({"reranker": {"provider": "cohere"}}, "reranker"),
    ({"custom_fact_extraction_prompt": "..."}, "custom_fact_extraction_prompt"),
    ({"custom_instructions": "..."}, "custom_instructions"),
    ({"custom_update_memory_prompt": "..."}, "custom_update_memory_prompt"),
    ({"embedder": {"provider": "openai"}}, "embedder.config.model"),
    ({"llm": {"provider": "openai", "config": {}}}, "llm.config.model"),
    ({"embedder": {"provider": "huggingface", "config": {"model": "m"}}}, "huggingface"),
])
def test_unsupported_keys_are_refused_by_name(config: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        Memory.from_config(config)
    assert caught.value.hint


def test_supported_shapes_map() -> None:
    assert translate({"embedder": {"provider": "ollama", "config": {
        "model": "nomic-embed-text", "ollama_base_url": "http://o:11434"}}}) == {
        "embedder": "ollama:nomic-embed-text", "embedder_url": "http://o:11434"}
    assert translate({"vector_store": {"provider": "pgvector", "config": {
        "connection_string": "postgresql://a@b/c"}}, "version": "v1.1"}) == {
        "database_url": "postgresql://a@b/c"}
