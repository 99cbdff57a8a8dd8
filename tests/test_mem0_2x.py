"""mem0 2.x details, on Memory, REST (a live server), memvault's MemoryClient and mem0's own
client, on both backends: explicit nulls, add(timestamp=), search(reference_date=), the
`user_id: "*"` wildcard, the admin listing's default page, malformed ids, history ADD rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from memvault.client import MemoryClient
from memvault.config import Settings
from memvault.errors import InvalidInput
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.deps import runtime_of
from tests.peers.live_server import LiveServer

ADMIN = "mv-admin-mem0-2x-test-key"

OLD = 1_700_000_000  # 2023-11-14T22:13:20Z
OLD_ISO = "2023-11-14T22:13:20.000000+00:00"


def test_explicit_nulls_are_the_defaults(live_url: str) -> None:
    # mem0's server declares these Optional[...] = None: null is accepted, never a 422.
    added = httpx.post(live_url + "/memories", json={
        "messages": [{"role": "user", "content": "I like green tea"}], "user_id": "alice",
        "infer": None, "expiration_date": None, "memory_type": None, "prompt": None,
        "metadata": None, "timestamp": None})
    assert added.status_code == 200, added.text
    assert added.json()["results"][0]["event"] == "ADD"
    found = httpx.post(live_url + "/search", json={
        "query": "tea", "filters": {"user_id": "alice"}, "top_k": None, "explain": None,
        "show_expired": None, "rerank": None, "threshold": None, "reference_date": None})
    assert found.status_code == 200, found.text
    assert [r["memory"] for r in found.json()["results"]] == ["I like green tea"]
    assert "score_details" not in found.json()["results"][0]
    listed = httpx.get(live_url + "/memories", params={"user_id": "alice"})
    assert listed.status_code == 200 and len(listed.json()["results"]) == 1
    # top_k=0 still means "nothing", not the default, and a bad value is still a 400
    zero = httpx.post(live_url + "/search", json={"query": "tea", "top_k": 0,
                                                  "filters": {"user_id": "alice"}})
    assert zero.status_code == 400, zero.text


def test_admin_listing_default_page_is_mem0s(memory: Memory, live_url: str) -> None:
    memory.add([{"role": "user", "content": f"fact number {i}"} for i in range(25)],
               user_id="u", infer=False)
    everything = httpx.get(live_url + "/memories").json()["results"]
    assert len(everything) == 25  # mem0 lists up to 1,000 by default; was 20 here
    scoped = httpx.get(live_url + "/memories", params={"user_id": "u"}).json()["results"]
    assert len(scoped) == 20  # a namespace's listing keeps get_all's default, as mem0


def test_add_timestamp_dates_the_memory(memory: Memory, live_url: str) -> None:
    by_memory = memory.add("met Ana in Porto", user_id="t", infer=False, timestamp=OLD)
    record = memory.get(by_memory["results"][0]["id"])
    assert record is not None
    assert record["created_at"] == record["updated_at"] == OLD_ISO
    history = memory.history(record["id"])
    assert history[0]["event"] == "ADD" and history[0]["updated_at"] == OLD_ISO

    with MemoryClient(live_url) as client:
        iso = "2024-02-29T12:00:00+01:00"
        added = client.add("leap day lunch", user_id="t", infer=False, timestamp=iso)
        stored = client.get(added["results"][0]["id"])
        assert stored is not None and stored["created_at"] == "2024-02-29T11:00:00.000000+00:00"
        with pytest.raises(InvalidInput, match="future"):
            client.add("from tomorrow", user_id="t", timestamp=4_000_000_000)
        with pytest.raises(InvalidInput, match="offset"):
            client.add("no zone", user_id="t", timestamp="2024-01-01T10:00:00")
    with pytest.raises(InvalidInput, match="timestamp"):
        memory.add("bad", user_id="t", timestamp="yesterday")
    assert len(memory.get_all(user_id="t")["results"]) == 2  # refused adds stored nothing


def test_reference_date_searches_as_of_then(memory: Memory, live_url: str) -> None:
    memory.add("drinks green tea every morning", user_id="r", infer=False, timestamp=OLD)
    memory.add("drinks black coffee now", user_id="r", infer=False)
    memory.add("tea subscription until 2024", user_id="r", infer=False, timestamp=OLD,
               expiration_date="2024-06-30")

    def seen(**kwargs: Any) -> list[str]:
        found = memory.search("what does r drink", filters={"user_id": "r"}, threshold=None,
                              **kwargs)
        return sorted(r["memory"] for r in found["results"])

    assert seen() == ["drinks black coffee now", "drinks green tea every morning"]
    as_of_2024 = ["drinks green tea every morning", "tea subscription until 2024"]
    assert seen(reference_date="2024-01-01") == as_of_2024  # not yet expired then
    assert seen(reference_date=date(2024, 6, 30)) == as_of_2024  # valid on its last day
    assert seen(reference_date="2024-07-01") == ["drinks green tea every morning"]
    assert seen(reference_date="2024-07-01", show_expired=True) == as_of_2024
    assert seen(reference_date=OLD - 1) == []  # one second before anything was made
    assert seen(reference_date=OLD) == as_of_2024  # an instant includes itself

    with MemoryClient(live_url) as client:
        found = client.search("drink", filters={"user_id": "r"}, threshold=None,
                              reference_date=datetime(2024, 1, 1, tzinfo=UTC))
        assert sorted(r["memory"] for r in found["results"]) == as_of_2024
        with pytest.raises(InvalidInput, match="reference_date"):
            client.search("drink", filters={"user_id": "r"}, reference_date="last week")


def test_wildcard_user_id_searches_every_user(memory: Memory, live_url: str) -> None:
    memory.add("alice likes tea", user_id="alice", infer=False)
    memory.add("bob likes tea too", user_id="bob", infer=False)
    memory.add("an agent note about tea", agent_id="helper", infer=False)
    found = memory.search("tea", filters={"user_id": "*"}, threshold=None)["results"]
    assert sorted(r["user_id"] for r in found) == ["alice", "bob"]  # users only: no agent row
    listed = memory.get_all(filters={"user_id": "*"})["results"]
    assert len(listed) == 2
    both = memory.search("tea", filters={"user_id": "*", "memory_type": {"ne": "x"}},
                         threshold=None)
    assert len(both["results"]) == 2
    with pytest.raises(InvalidInput, match="user_id"):
        memory.search("tea", filters={"memory_type": {"ne": "x"}})  # still must name a scope
    over_rest = httpx.post(live_url + "/search", json={"query": "tea",
                                                       "filters": {"user_id": "*"}})
    assert over_rest.status_code == 200 and len(over_rest.json()["results"]) == 2


def test_malformed_ids_are_client_errors(memory: Memory, live_url: str) -> None:
    for bad in ("not-a-uuid", "", "../../etc", "1234"):
        with pytest.raises(InvalidInput, match="memory_id"):
            memory.get(bad)
        with pytest.raises(InvalidInput):
            memory.history(bad)
    with MemoryClient(live_url) as client, pytest.raises(InvalidInput, match="memory_id"):
        client.get("not-a-uuid")
    for path in ("/memories/not-a-uuid", "/memories/not-a-uuid/history",
                 "/v1/memories/not-a-uuid/", "/v1/memories/not-a-uuid/history/"):
        answer = httpx.get(live_url + path)
        assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text)


def test_infer_without_llm_says_extraction_was_skipped(
    memory: Memory, live_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="memvault.memory")
    first = memory.add("I am vegetarian", user_id="v")
    second = memory.add("I live in Lisbon", user_id="v")
    assert first["extraction"] == second["extraction"] == "skipped"
    warned = [r for r in caplog.records if "no LLM is configured" in r.getMessage()]
    assert len(warned) == 1  # once per Memory instance, not per call
    assert "extraction" not in memory.add("said verbatim", user_id="v", infer=False)
    over_rest = httpx.post(live_url + "/memories", json={
        "messages": [{"role": "user", "content": "I have a dog"}], "user_id": "v"}).json()
    assert over_rest["extraction"] == "skipped"
    verbatim = httpx.post(live_url + "/memories", json={
        "messages": [{"role": "user", "content": "I have a cat"}], "user_id": "v",
        "infer": False}).json()
    assert "extraction" not in verbatim


@pytest.fixture
def keyed_url(settings: Settings, memory: Memory) -> Iterator[str]:
    """A live server with an admin key (mem0's client always sends one)."""
    app = app_over(settings.model_copy(update={"admin_api_key": SecretStr(ADMIN)}), memory)
    try:
        with LiveServer(app) as live:
            yield live.url
    finally:
        runtime_of(app).add_batcher.stop()
        runtime_of(app).embedder.stop()


def test_mem0_client_sends_timestamp_reference_date_and_wildcards(
    memory: Memory, keyed_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEM0_TELEMETRY", "False")
    monkeypatch.setenv("MEM0_DIR", str(tmp_path / "mem0"))
    from mem0 import MemoryClient as Mem0Client

    client = Mem0Client(api_key=ADMIN, host=keyed_url)
    added = client.add("went hiking in Sintra", user_id="m", timestamp=OLD)
    assert added["extraction"] == "skipped"
    client.add("went swimming today", user_id="m")
    record = memory.get(added["results"][0]["id"])
    assert record is not None and record["created_at"] == OLD_ISO
    found = client.search("what did m do", filters={"user_id": "m"}, reference_date="2024-01-01",
                          threshold=0.0)
    assert [r["memory"] for r in found["results"]] == ["went hiking in Sintra"]
    client.add("another user's hike", user_id="n")
    everyone = client.search("hike", filters={"user_id": "*"}, threshold=0.0)["results"]
    assert {r["user_id"] for r in everyone} == {"m", "n"}
    # mem0's client maps a malformed id to its ValidationError, an unknown one to not-found
    from mem0.exceptions import MemoryNotFoundError, ValidationError

    with pytest.raises(ValidationError, match="UUID"):
        client.get("not-a-uuid")
    with pytest.raises(MemoryNotFoundError):
        client.get("00000000-0000-4000-8000-000000000000")
