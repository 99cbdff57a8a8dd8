"""mem0's prompt config keys (custom_instructions, custom_fact_extraction_prompt,
custom_update_memory_prompt) reach the LLM: a real chat-completions server on 127.0.0.1
records what memvault sends. Also add(timestamp=) dating the extraction prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memvault.memory import Memory
from tests.peers.chat_server import ChatServer

OLD = 1_700_000_000  # 2023-11-14


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with ChatServer() as server:
        yield server


def mem0_config(chat: ChatServer, tmp_path: Path, database_url: str,
                **prompts: str) -> dict[str, Any]:
    """A mem0-shaped config dict, as a migrating script passes to Memory.from_config."""
    return {
        "data_dir": str(tmp_path / "data"),
        "vector_store": {"provider": "pgvector" if database_url.startswith("postgresql")
                         else "sqlite",
                         "config": ({"connection_string": database_url}
                                    if database_url.startswith("postgresql")
                                    else {"path": database_url.removeprefix("sqlite:///")})},
        "llm": {"provider": "openai", "config": {"model": "scripted",
                                                 "openai_base_url": chat.url + "/v1"}},
        **prompts,
    }


def facts(*items: str) -> str:
    return json.dumps({"facts": list(items)})


def test_custom_instructions_are_added_to_the_extraction_prompt(
    chat: ChatServer, tmp_path: Path, database_url: str
) -> None:
    rule = "Only remember food preferences; ignore travel."
    with Memory.from_config(mem0_config(chat, tmp_path, database_url,
                                        custom_instructions=rule)) as memory:
        chat.script(facts("Likes ramen"))
        result = memory.add("I like ramen and I fly to Tokyo", user_id="a")
        assert [r["memory"] for r in result["results"]] == ["Likes ramen"]
        system = chat.calls[0]["messages"][0]["content"]
        assert rule in system
        assert system.startswith("You extract durable facts")  # memvault's own rules stay
        assert system.index('{"facts"') < system.index(rule)
        # a call's own prompt replaces the extraction prompt; the instructions still apply
        chat.script(facts("Flies to Tokyo"))
        memory.add("I fly to Tokyo", user_id="b", prompt="List trips.")
        system = chat.calls[1]["messages"][0]["content"]
        assert system.startswith("List trips.") and rule in system


def test_custom_fact_extraction_prompt_replaces_memvaults(
    chat: ChatServer, tmp_path: Path, database_url: str
) -> None:
    prompt = "Extract only dates and appointments from the conversation."
    with Memory.from_config(mem0_config(chat, tmp_path, database_url,
                                        custom_fact_extraction_prompt=prompt)) as memory:
        chat.script(facts("Dentist on Friday"))
        memory.add("Dentist on Friday, and I like tea", user_id="a")
        system = chat.calls[0]["messages"][0]["content"]
        assert system.startswith(prompt)
        assert "You extract durable facts" not in system
        assert '{"facts": [' in system  # the answer format memvault parses is kept


def test_custom_update_memory_prompt_reaches_the_reconcile_step(
    chat: ChatServer, tmp_path: Path, database_url: str
) -> None:
    rules = "Never DELETE a memory; when facts conflict, UPDATE the memory instead."
    with Memory.from_config(mem0_config(chat, tmp_path, database_url,
                                        custom_update_memory_prompt=rules)) as memory:
        memory.add("Lives in Porto", user_id="a", infer=False)
        chat.script(facts("Lives in Lisbon"), json.dumps({"memory": [
            {"id": "0", "text": "Lives in Lisbon", "event": "UPDATE",
             "old_memory": "Lives in Porto"}]}))
        result = memory.add("I moved to Lisbon", user_id="a")
        assert [(r["event"], r["memory"]) for r in result["results"]] == [
            ("UPDATE", "Lives in Lisbon")]
        reconcile = chat.calls[1]["messages"][0]["content"]
        assert reconcile.startswith(rules)
        assert "- DELETE: an existing memory" not in reconcile  # memvault's rules replaced
        assert '0: "Lives in Porto"' in reconcile and '{"memory": [' in reconcile


def test_timestamp_dates_the_conversation_and_the_facts(
    chat: ChatServer, tmp_path: Path, database_url: str
) -> None:
    with Memory.from_config(mem0_config(chat, tmp_path, database_url)) as memory:
        chat.script(facts("Visited Sintra"))
        result = memory.add("I visited Sintra", user_id="a", timestamp=OLD)
        system = chat.calls[0]["messages"][0]["content"]
        assert "took place on 2023-11-14" in system
        stored = memory.get(result["results"][0]["id"])
        assert stored is not None and stored["created_at"].startswith("2023-11-14T22:13:20")
