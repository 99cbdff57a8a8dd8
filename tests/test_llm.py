"""infer=True against a real chat-completions server on 127.0.0.1 with scripted answers."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.errors import LLMError
from memvault.llm import make_llm
from memvault.memory import Memory
from tests.peers.chat_server import ChatServer


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with ChatServer(api_key="sk-test-secret") as server:
        yield server


@pytest.fixture
def llm_memory(
    chat: ChatServer, tmp_path: Path, database_url: str, local_embedder: LocalEmbedder
) -> Iterator[Memory]:
    settings = load_settings({
        "data_dir": tmp_path / "data", "database_url": database_url,
        "llm": "openai:scripted-model", "llm_url": chat.url + "/v1",
        "llm_api_key": "sk-test-secret",
    })
    with Memory(settings, embedder=local_embedder) as memory:
        yield memory


def facts(*items: str) -> str:
    return json.dumps({"facts": list(items)})


def test_facts_are_added_and_journaled(llm_memory: Memory, chat: ChatServer) -> None:
    chat.script(facts("Is vegetarian", "Lives in Lisbon"))
    result = llm_memory.add([{"role": "user", "content": "I'm a vegetarian living in Lisbon"},
                             {"role": "assistant", "content": "Noted!"}], user_id="alice")
    assert [(r["memory"], r["event"]) for r in result["results"]] == [
        ("Is vegetarian", "ADD"), ("Lives in Lisbon", "ADD")]
    assert len(chat.calls) == 1  # nothing stored yet: no reconcile call needed
    request = chat.calls[0]
    assert request["model"] == "scripted-model"
    assert request["response_format"] == {"type": "json_object"}
    assert "user: I'm a vegetarian living in Lisbon" in request["messages"][1]["content"]
    assert chat.requests[0]["headers"]["authorization"] == "Bearer sk-test-secret"
    stored = llm_memory.get_all(user_id="alice")["results"]
    assert sorted(r["memory"] for r in stored) == ["Is vegetarian", "Lives in Lisbon"]
    for item in result["results"]:
        assert [h["event"] for h in llm_memory.history(item["id"])] == ["ADD"]


def test_reconcile_updates_deletes_and_adds(llm_memory: Memory, chat: ChatServer) -> None:
    kept = llm_memory.add("Likes pizza with mushrooms", user_id="bob", infer=False)
    moved = llm_memory.add("Lives in Porto", user_id="bob", infer=False)
    other = llm_memory.add("Lives in Porto", user_id="carol", infer=False)
    kept_id, moved_id = kept["results"][0]["id"], moved["results"][0]["id"]
    chat.script(facts("Moved to Lisbon", "Likes pizza with mushrooms and olives",
                      "Has a dog named Rex"))
    seen: dict[str, str] = {}

    def reconcile(body: dict) -> str:
        # The model sees the namespace's memories by number; answer in those numbers.
        prompt = seen["prompt"] = body["messages"][0]["content"]
        listing = prompt.split("Existing memories (id: text):\n")[1].split("\n\n")[0]
        number = {json.loads(text): n for n, _, text in
                  (line.partition(": ") for line in listing.splitlines())}
        return json.dumps({"memory": [
            {"id": number["Lives in Porto"], "text": "", "event": "DELETE"},
            {"id": number["Likes pizza with mushrooms"],
             "text": "Likes pizza with mushrooms and olives", "event": "UPDATE",
             "old_memory": "Likes pizza with mushrooms"},
            {"id": None, "text": "Lives in Lisbon", "event": "ADD"},
            {"id": None, "text": "Has a dog named Rex", "event": "ADD"},
        ]})

    chat.script(reconcile)
    result = llm_memory.add("I moved to Lisbon with my dog Rex. Pizza with olives please!",
                            user_id="bob")
    events = {(r["event"], r["memory"]) for r in result["results"]}
    assert events == {("DELETE", "Lives in Porto"),
                      ("UPDATE", "Likes pizza with mushrooms and olives"),
                      ("ADD", "Lives in Lisbon"), ("ADD", "Has a dog named Rex")}
    assert seen["prompt"].count("\"Lives in Porto\"") == 1  # not carol's copy
    assert llm_memory.get(moved_id) is None
    assert llm_memory.get(kept_id)["memory"] == "Likes pizza with mushrooms and olives"
    assert [h["event"] for h in llm_memory.history(moved_id)] == ["ADD", "DELETE"]
    assert [h["event"] for h in llm_memory.history(kept_id)] == ["ADD", "UPDATE"]
    # Another tenant's identical memory is untouched.
    assert llm_memory.get(other["results"][0]["id"])["memory"] == "Lives in Porto"


def test_malformed_json_is_retried_with_the_error(llm_memory: Memory, chat: ChatServer) -> None:
    chat.script("Sure! The facts are: vegetarian", facts("Is vegetarian"))
    result = llm_memory.add("I am vegetarian", user_id="dana")
    assert [r["memory"] for r in result["results"]] == ["Is vegetarian"]
    assert len(chat.calls) == 2
    retry = chat.calls[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "Sure! The facts are: vegetarian"}
    assert "could not be used" in retry[-1]["content"]
    assert "Invalid JSON" in retry[-1]["content"]


def test_wrong_shape_then_fenced_json_is_accepted(llm_memory: Memory, chat: ChatServer) -> None:
    chat.script(json.dumps({"facts": "Is vegetarian"}),
                "```json\n" + facts("Is vegetarian") + "\n```")
    result = llm_memory.add("I am vegetarian", user_id="dana")
    assert [r["memory"] for r in result["results"]] == ["Is vegetarian"]
    assert "facts" in chat.calls[1]["messages"][-1]["content"]


def test_malformed_twice_raises_and_stores_nothing(llm_memory: Memory, chat: ChatServer) -> None:
    chat.script("not json", json.dumps({"facts": ["ok"], "extra": 1}))
    with pytest.raises(LLMError, match="unusable JSON twice") as caught:
        llm_memory.add("I am vegetarian", user_id="erin")
    assert chat.url in str(caught.value)
    assert llm_memory.store.total() == 0
    assert llm_memory.store.last_seq() == 0


def test_reconcile_with_unknown_id_is_retried_then_fails(
    llm_memory: Memory, chat: ChatServer
) -> None:
    llm_memory.add("Lives in Porto", user_id="fay", infer=False)
    bad = json.dumps({"memory": [{"id": "7", "text": "x", "event": "DELETE"}]})
    chat.script(facts("Lives in Lisbon"), bad, bad)
    with pytest.raises(LLMError, match="not one of"):
        llm_memory.add("I live in Lisbon now", user_id="fay")
    assert [r["memory"] for r in llm_memory.get_all(user_id="fay")["results"]] == [
        "Lives in Porto"]


def test_nothing_to_remember_is_an_empty_result(llm_memory: Memory, chat: ChatServer) -> None:
    chat.script(facts())
    assert llm_memory.add("hi there", user_id="gil") == {"results": []}
    assert llm_memory.store.total() == 0


def test_custom_prompt_replaces_the_extraction_prompt(
    llm_memory: Memory, chat: ChatServer
) -> None:
    chat.script(facts("Prefers window seats"))
    llm_memory.add("book me a window seat", user_id="hal", prompt="Extract travel preferences.")
    system = chat.calls[0]["messages"][0]["content"]
    assert system.startswith("Extract travel preferences.")
    assert '{"facts": [' in system


def test_server_errors_are_retried_then_raised(llm_memory: Memory, chat: ChatServer) -> None:
    chat.script((503, {"error": "busy"}), (503, {"error": "busy"}), (503, {"error": "busy"}))
    with pytest.raises(LLMError, match="HTTP 503"):
        llm_memory.add("I am vegetarian", user_id="ivy")
    assert len(chat.calls) == 3
    assert llm_memory.store.total() == 0


def test_rejected_api_key_is_not_retried(llm_memory: Memory, chat: ChatServer) -> None:
    chat.api_key = "another-key"
    with pytest.raises(LLMError, match="HTTP 401") as caught:
        llm_memory.add("I am vegetarian", user_id="ivy")
    assert "MEMVAULT_LLM_API_KEY" in str(caught.value)
    assert "sk-test-secret" not in str(caught.value)
    assert len(chat.requests) == 1


def test_unreachable_llm_names_the_address(tmp_path: Path, local_embedder: LocalEmbedder) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings({"data_dir": tmp_path, "llm": "ollama:llama3",
                              "llm_url": f"http://127.0.0.1:{port}"})
    with Memory(settings, embedder=local_embedder) as memory:
        with pytest.raises(LLMError, match=f"127.0.0.1:{port}/v1/chat/completions"):
            memory.add("I am vegetarian", user_id="joe")
        assert memory.store.total() == 0


def test_without_llm_infer_stores_verbatim(memory: Memory) -> None:
    result = memory.add("I am vegetarian", user_id="kim", infer=True)
    assert [r["memory"] for r in result["results"]] == ["I am vegetarian"]


def test_provider_urls(tmp_path: Path) -> None:
    ollama = make_llm(load_settings({"data_dir": tmp_path, "llm": "ollama:qwen"}))
    assert ollama.url == "http://127.0.0.1:11434/v1/chat/completions"
    openai = make_llm(load_settings({"data_dir": tmp_path, "llm": "openai:gpt-4o-mini"}))
    assert openai.url == "https://api.openai.com/v1/chat/completions"
    custom = make_llm(load_settings({"data_dir": tmp_path, "llm": "openai:m",
                                     "llm_url": "http://127.0.0.1:9/v1/"}))
    assert custom.url == "http://127.0.0.1:9/v1/chat/completions"
