"""mem0's Python Memory API on every backend, with the real local embedder."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from memvault.config import Settings, load_settings
from memvault.errors import EmbedderMismatch, InvalidInput, NotFound
from memvault.memory import Memory
from tests.peers.embedding_server import EmbeddingServer

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def test_add_infer_false_shape(memory: Memory) -> None:
    result = memory.add(
        [{"role": "user", "content": "I love vegetable pizza"},
         {"role": "system", "content": "be nice"},
         {"role": "assistant", "content": "Noted!", "name": "helper"}],
        user_id="alice", infer=False,
    )
    items = result["results"]
    assert [i["memory"] for i in items] == ["I love vegetable pizza", "Noted!"]
    assert items[0] == {"id": items[0]["id"], "memory": "I love vegetable pizza",
                        "event": "ADD", "actor_id": None, "role": "user"}
    assert items[1]["actor_id"] == "helper" and items[1]["role"] == "assistant"
    uuid.UUID(items[0]["id"], version=4)


def test_add_accepts_string_and_dict(memory: Memory) -> None:
    assert memory.add("plain string", user_id="u")["results"][0]["role"] == "user"
    assert memory.add({"role": "user", "content": "one dict"}, agent_id="a")["results"]


def test_infer_without_llm_stores_verbatim(memory: Memory) -> None:
    # PRODUCT.md: MEMVAULT_LLM unset means infer stores messages verbatim.
    result = memory.add("Bob works at the harbour", user_id="bob")
    assert result["results"][0]["event"] == "ADD"
    assert memory.get(result["results"][0]["id"])["memory"] == "Bob works at the harbour"


def test_record_shape_and_hash(memory: Memory) -> None:
    added = memory.add("Alice lives in Lisbon", user_id="alice", agent_id="bot", run_id="r1",
                       metadata={"topic": "home", "user_id": "mallory"}, infer=False)
    got = memory.get(added["results"][0]["id"])
    assert got is not None
    assert got["hash"] == hashlib.md5(b"Alice lives in Lisbon").hexdigest()
    # Tenant keys in metadata are ignored: a memory can never move to another user.
    assert got["metadata"] == {"topic": "home"}
    assert (got["user_id"], got["agent_id"], got["run_id"]) == ("alice", "bot", "r1")
    assert ISO.match(got["created_at"]) and got["updated_at"] == got["created_at"]
    assert "score" not in got


def test_get_unknown_and_malformed(memory: Memory) -> None:
    assert memory.get(str(uuid.uuid4())) is None
    with pytest.raises(InvalidInput, match="not a valid UUID"):
        memory.get("not-a-uuid")


def test_search_ranks_by_meaning(memory: Memory) -> None:
    memory.add([{"role": "user", "content": t} for t in [
        "Alice is allergic to peanuts",
        "Alice's favourite band is Radiohead",
        "Alice drives a blue bicycle to work",
    ]], user_id="alice", infer=False)
    memory.add("Bob is allergic to cats", user_id="bob", infer=False)
    found = memory.search("what food allergies does she have", filters={"user_id": "alice"})
    results = found["results"]
    assert results[0]["memory"] == "Alice is allergic to peanuts"
    assert all(r["user_id"] == "alice" for r in results)
    assert all(0.1 <= r["score"] <= 1 for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    legacy = memory.search("allergy", user_id="alice", limit=1)
    assert len(legacy["results"]) == 1
    explained = memory.search("allergy", filters={"user_id": "alice"}, explain=True, top_k=1)
    assert "cosine_similarity" in explained["results"][0]["score_details"]


def test_search_requires_a_scope(memory: Memory) -> None:
    with pytest.raises(InvalidInput, match="user_id, agent_id or run_id"):
        memory.search("anything", filters={"topic": "x"})
    with pytest.raises(InvalidInput):
        memory.get_all()


def test_get_all_filters_and_limit(memory: Memory) -> None:
    for i in range(5):
        memory.add(f"note {i}", user_id="alice", metadata={"n": i}, infer=False)
    memory.add("other", user_id="bob", infer=False)
    assert len(memory.get_all(filters={"user_id": "alice"})["results"]) == 5
    assert len(memory.get_all(user_id="alice", top_k=2)["results"]) == 2
    big = memory.get_all(filters={"user_id": "alice", "n": {"gte": 3}})["results"]
    assert sorted(r["metadata"]["n"] for r in big) == [3, 4]


def test_update_changes_text_hash_vector_and_history(memory: Memory) -> None:
    item = memory.add("I live in Porto", user_id="alice", infer=False)["results"][0]
    assert memory.update(item["id"], text="I live in Berlin") == {
        "message": "Memory updated successfully!"}
    got = memory.get(item["id"])
    assert got["memory"] == "I live in Berlin" and got["updated_at"] > got["created_at"]
    top = memory.search("German capital city", user_id="alice", top_k=1)["results"][0]
    assert top["id"] == item["id"]
    memory.update(item["id"], data="I live in Paris")  # mem0's old keyword
    memory.update(item["id"], metadata={"k": "v"})
    assert memory.get(item["id"])["metadata"] == {"k": "v"}
    history = memory.history(item["id"])
    assert [h["event"] for h in history] == ["ADD", "UPDATE", "UPDATE", "UPDATE"]
    assert history[1]["old_memory"] == "I live in Porto"
    assert history[1]["new_memory"] == "I live in Berlin"
    assert set(history[0]) == {"id", "memory_id", "old_memory", "new_memory", "event",
                               "created_at", "updated_at", "is_deleted", "actor_id", "role"}


def test_update_errors(memory: Memory) -> None:
    item = memory.add("x1", user_id="alice", infer=False)["results"][0]
    with pytest.raises(InvalidInput, match="nothing to update"):
        memory.update(item["id"])
    with pytest.raises(NotFound):
        memory.update(str(uuid.uuid4()), text="y")
    with pytest.raises(ValueError):  # mem0 callers catch ValueError
        memory.update(str(uuid.uuid4()), text="y")


def test_expiration(memory: Memory) -> None:
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    item = memory.add("temporary", user_id="alice", expiration_date=yesterday,
                      infer=False)["results"][0]
    memory.add("permanent", user_id="alice", expiration_date=date(2999, 1, 1), infer=False)
    listed = memory.get_all(user_id="alice")["results"]
    assert [r["memory"] for r in listed] == ["permanent"]
    assert len(memory.get_all(user_id="alice", show_expired=True)["results"]) == 2
    assert item["id"] not in {r["id"] for r in memory.search("temporary", user_id="alice",
                                                              threshold=0)["results"]}
    memory.update(item["id"], expiration_date=None)
    assert len(memory.get_all(user_id="alice")["results"]) == 2


def test_delete_and_history(memory: Memory) -> None:
    item = memory.add("to delete", user_id="alice", infer=False)["results"][0]
    assert memory.delete(item["id"]) == {"message": "Memory deleted successfully!"}
    assert memory.get(item["id"]) is None
    assert memory.history(item["id"])[-1]["event"] == "DELETE"
    assert memory.history(item["id"])[-1]["is_deleted"] is True
    with pytest.raises(NotFound, match="not found"):
        memory.delete(item["id"])


def test_delete_all_is_never_wider_than_asked(memory: Memory) -> None:
    memory.add("a1", user_id="alice", infer=False)
    memory.add("a2", user_id="alice", agent_id="bot", infer=False)
    memory.add("b1", user_id="bob", infer=False)
    memory.add("b2", user_id="bob", agent_id="bot", infer=False)
    with pytest.raises(InvalidInput):
        memory.delete_all()
    memory.delete_all(user_id="alice", agent_id="bot")
    assert memory.store.counts() == {"user:alice": 1, "user:bob": 1, "user:bob/agent:bot": 1}
    memory.delete_all(user_id="bob")
    assert memory.store.counts() == {"user:alice": 1}


def test_reset_is_journaled(memory: Memory) -> None:
    for i in range(3):
        memory.add(f"r{i}", user_id="alice", infer=False)
    memory.reset()
    assert memory.store.total() == 0
    assert [e.op for e in memory.store.journal()].count("DELETE") == 3


def test_duplicate_add_reports_existing(memory: Memory) -> None:
    first = memory.add("same fact", user_id="alice", infer=False)["results"][0]
    again = memory.add("same fact", user_id="alice", infer=False)["results"][0]
    assert again["id"] == first["id"] and again["event"] == "NONE"
    assert memory.store.total() == 1


def test_entities(memory: Memory) -> None:
    memory.add("e1", user_id="alice", agent_id="bot", infer=False)
    kinds = {(e["type"], e["id"]) for e in memory.entities()}
    assert kinds == {("user", "alice"), ("agent", "bot")}


def _http_settings(base: Settings, url: str, model: str) -> Settings:
    return load_settings({"data_dir": base.data_dir, "database_url": base.database_url,
                          "embedder": f"openai:{model}", "embedder_url": url + "/v1"})


def test_embedder_switch_is_refused_until_reembedded(settings: Settings) -> None:
    with EmbeddingServer(dims=64) as server:
        with Memory(_http_settings(settings, server.url, "small")) as first:
            first.add("kept fact", user_id="alice", infer=False)
        server.dims = 32
        with Memory(_http_settings(settings, server.url, "other")) as second:
            with pytest.raises(EmbedderMismatch) as caught:
                second.search("fact", user_id="alice")
            assert "openai:small:64" in str(caught.value)
            assert "memvault restore latest --yes" in caught.value.hint
            with pytest.raises(EmbedderMismatch):
                second.add("new fact", user_id="alice", infer=False)
            # Reads that need no vectors still work: nothing is hidden.
            assert second.get_all(user_id="alice")["results"][0]["memory"] == "kept fact"
            assert second.store.total() == 1


def test_same_name_different_model_is_refused(settings: Settings) -> None:
    with EmbeddingServer(dims=16) as server:
        with Memory(_http_settings(settings, server.url, "m")) as first:
            first.add("fact", user_id="alice", infer=False)
        original = server._openai
        server.routes[("POST", "/v1/embeddings")] = lambda b, h: original(
            {**b, "model": "swapped"}, h)
        with Memory(_http_settings(settings, server.url, "m")) as second, pytest.raises(
            EmbedderMismatch, match="probe"
        ):
            second.search("fact", user_id="alice")


def test_empty_store_adopts_a_new_embedder(settings: Settings) -> None:
    with EmbeddingServer(dims=16) as server:
        with Memory(_http_settings(settings, server.url, "a")) as first:
            first.add("fact", user_id="alice", infer=False)
            first.reset()
        with Memory(_http_settings(settings, server.url, "b")) as second:
            second.add("fresh", user_id="alice", infer=False)
            assert second.store.meta().active_embedder == "openai:b:16"


def test_add_records_with_precomputed_vectors(memory: Memory) -> None:
    from tests.helpers import record

    recs = [record(f"pre {i}") for i in range(4)]
    matrix = memory.embedder.embed([r.memory for r in recs])
    results = memory.add_records(recs, matrix)
    assert [r["event"] for r in results] == ["ADD"] * 4
    with pytest.raises(InvalidInput, match="shape"):
        memory.add_records([record("x")], np.zeros((1, 3), dtype=np.float32))


def test_from_config_accepts_mem0_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with EmbeddingServer(dims=8) as server:
        memory = Memory.from_config({
            "embedder": {"provider": "openai",
                         "config": {"model": "tiny", "openai_base_url": server.url + "/v1"}},
            "vector_store": {"provider": "sqlite", "config": {"path": str(tmp_path / "m.db")}},
            "history_db_path": "/ignored",
        })
        with memory:
            memory.add("configured", user_id="u", infer=False)
            assert memory.store.meta().active_embedder == "openai:tiny:8"
