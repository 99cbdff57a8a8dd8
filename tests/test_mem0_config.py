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
        "host": "db", "dbname": "m", "collection_name": ""}}}, "collection_name"),
    ({"vector_store": {"provider": "sqlite", "config": {
        "path": "m.db", "embedding_model_dims": "384"}}}, "embedding_model_dims"),
    ({"vector_store": {"provider": "sqlite", "config": {"path": "m.db",
                                                        "embedding_model_dims": 384}},
      "embedder": {"config": {"embedding_model_dims": 1536}}}, "embedding_model_dims"),
    ({"vector_store": {"provider": "pgvector", "config": {"user": "mem0"}}}, "host and"),
    ({"vector_store": {"provider": "qdrant", "config": {"host": "q", "port": 6333}}}, "qdrant"),
    ({"vector_store": {"provider": "qdrant", "config": {"path": "/tmp/qdrant"}}}, "qdrant"),
    ({"vector_store": {"config": {"path": "/tmp/qdrant"}}}, "None"),
    ({"vector_store": {"provider": "sqlite", "config": {"path": "m.db", "x": 1}}}, "'x'"),
    ({"graph_store": {"provider": "neo4j"}}, "graph_store"),
    ({"reranker": {"provider": "cohere"}}, "reranker"),
    ({"custom_fact_extraction_prompt": ""}, "custom_fact_extraction_prompt"),
    ({"custom_instructions": 42}, "custom_instructions"),
    ({"custom_update_memory_prompt": "  "}, "custom_update_memory_prompt"),
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


def _sqlite(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"data_dir": str(tmp_path / "data"), "vector_store": {
        "provider": "sqlite", "config": {"path": str(tmp_path / "m.db"), **extra}}}


def test_embedding_model_dims_is_checked_against_the_embedder(tmp_path: Path) -> None:
    # The bundled local model makes 384-dimensional vectors: the same number is accepted ...
    with Memory.from_config(_sqlite(tmp_path, embedding_model_dims=384)) as memory:
        memory.add("kept", user_id="u", infer=False)
    config = {**_sqlite(tmp_path), "embedder": {"provider": "local",
                                                  "config": {"embedding_model_dims": 384}}}
    with Memory.from_config(config) as memory:
        assert memory.get_all(user_id="u")["results"][0]["memory"] == "kept"
    # ... mem0's default (1536, OpenAI's) is refused naming both numbers, never adapted to
    with pytest.raises(ConfigError, match=r"1536.*384") as caught:
        Memory.from_config(_sqlite(tmp_path, embedding_model_dims=1536))
    assert "embedding_model_dims to 384" in (caught.value.hint or "")


def test_collection_name_claims_the_database(backend: str, database_url: str,
                                            tmp_path: Path) -> None:
    if backend == "sqlite":
        def config(name: str) -> dict[str, Any]:
            return _sqlite(tmp_path, collection_name=name)
    else:
        def config(name: str) -> dict[str, Any]:
            return {"data_dir": str(tmp_path / "data"), "vector_store": {
                "provider": "pgvector", "config": {"connection_string": database_url,
                                                   "collection_name": name}}}
    with Memory.from_config(config("memories")) as memory:  # mem0's server default
        memory.add("in memories", user_id="u", infer=False)
    with Memory.from_config(config("memories")) as memory:  # the same name: same store
        assert [r["memory"] for r in memory.get_all(user_id="u")["results"]] == ["in memories"]
    # mem0's library default names another collection: refused, never merged into this one
    with pytest.raises(ConfigError, match=r"'mem0'.*'memories'") as caught:
        Memory.from_config(config("mem0"))
    assert "another database" in (caught.value.hint or "")


def test_mem0_prompt_keys_become_settings() -> None:
    assert translate({"custom_instructions": "Only food preferences",
                      "custom_fact_extraction_prompt": "Extract dates",
                      "custom_update_memory_prompt": "Never delete"}) == {
        "llm_instructions": "Only food preferences", "llm_extraction_prompt": "Extract dates",
        "llm_update_prompt": "Never delete"}
