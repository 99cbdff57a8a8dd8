"""Bad input gets a clear error and loses nothing: no partial write, journal untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memvault.errors import InvalidInput, MemvaultError, SchemaError
from memvault.memory import Memory
from memvault.store.base import SCHEMA_VERSION
from memvault.store.sqlite import SQLiteStore


def _snapshot(memory: Memory) -> tuple[dict[str, int], int]:
    return memory.store.counts(), memory.store.last_seq()


@pytest.fixture
def seeded(memory: Memory) -> Memory:
    memory.add("existing fact", user_id="alice", infer=False)
    return memory


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"messages": ""}, "empty"),
        ({"messages": "   \n"}, "empty"),
        ({"messages": "x" * (1024 * 1024)}, "over the limit"),
        ({"messages": "bad \udcff utf8"}, "UTF-8"),
        ({"messages": "nul \x00 byte"}, "NUL"),
        ({"messages": b"bytes"}, "must be a string"),
        ({"messages": 42}, "must be a string"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": ["multi", "part"]}]}, "must be a string"),
        ({"messages": [{"role": "system", "content": "only system"}]}, "only system"),
        ({"messages": ["not a dict"]}, "must be an object"),
        ({"messages": "ok", "user_id": None}, "user_id, agent_id or run_id"),
        ({"messages": "ok", "user_id": 7}, "user_id must be a string"),
        ({"messages": "ok", "user_id": ""}, "printable"),
        ({"messages": "ok", "user_id": "x" * 300}, "printable"),
        ({"messages": "ok", "user_id": "a\nb"}, "printable"),
        ({"messages": "ok", "metadata": [1, 2]}, "metadata must be an object"),
        ({"messages": "ok", "metadata": {"k": object()}}, "JSON"),
        ({"messages": "ok", "metadata": {"k": float("nan")}}, "JSON"),
        ({"messages": "ok", "metadata": {"k": "x" * 70000}}, "bytes"),
        ({"messages": "ok", "metadata": {1: "x"}}, "keys must be strings"),
        ({"messages": "ok", "expiration_date": "tomorrow"}, "YYYY-MM-DD"),
        ({"messages": "ok", "expiration_date": 20260101}, "YYYY-MM-DD"),
        ({"messages": "ok", "infer": "yes"}, "infer"),
        ({"messages": "ok", "memory_type": 3}, "memory_type"),
    ],
)
def test_add_rejects_bad_input_without_writing(seeded: Memory, kwargs: dict[str, Any],
                                               fragment: str) -> None:
    kwargs = {"user_id": "alice", **kwargs}
    before = _snapshot(seeded)
    messages = kwargs.pop("messages")
    with pytest.raises(InvalidInput) as caught:
        seeded.add(messages, **kwargs)
    assert fragment in str(caught.value)
    assert _snapshot(seeded) == before


def test_one_bad_message_in_a_batch_writes_none(seeded: Memory) -> None:
    before = _snapshot(seeded)
    with pytest.raises(InvalidInput, match=r"messages\[2\]"):
        seeded.add([{"role": "user", "content": "good one"}, {"role": "user", "content": "two"},
                    {"role": "user", "content": ""}], user_id="alice")
    assert _snapshot(seeded) == before


@pytest.mark.parametrize("bad_id", ["", "123", "not-a-uuid", "'; DROP TABLE memories; --",
                                    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", 5, None])
def test_malformed_ids_are_clear_errors(seeded: Memory, bad_id: Any) -> None:
    before = _snapshot(seeded)
    for call in (seeded.get, seeded.delete, seeded.history,
                 lambda i: seeded.update(i, text="x")):
        with pytest.raises(InvalidInput, match="UUID"):
            call(bad_id)
    assert _snapshot(seeded) == before


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"query": ""}, "empty"),
        ({"query": 5}, "must be a string"),
        ({"top_k": 0}, "between 1 and 1000"),
        ({"top_k": 5000}, "between 1 and 1000"),
        ({"top_k": "10"}, "integer"),
        ({"threshold": 2}, "between 0 and 1"),
        ({"threshold": "high"}, "number"),
        ({"filters": {"user_id": "alice", "x": {"regex": ".*"}}}, "unknown filter operator"),
        ({"filters": "user_id=alice"}, "must be an object"),
    ],
)
def test_search_rejects_bad_input(seeded: Memory, kwargs: dict[str, Any], fragment: str) -> None:
    kwargs = {"query": "fact", "filters": {"user_id": "alice"}, **kwargs}
    with pytest.raises(InvalidInput) as caught:
        seeded.search(kwargs.pop("query"), **kwargs)
    assert fragment in str(caught.value)


def test_update_with_bad_text_changes_nothing(seeded: Memory) -> None:
    item = seeded.get_all(user_id="alice")["results"][0]
    before = _snapshot(seeded)
    with pytest.raises(InvalidInput):
        seeded.update(item["id"], text="")
    with pytest.raises(InvalidInput):
        seeded.update(item["id"], metadata="not a dict")  # type: ignore[arg-type]
    assert _snapshot(seeded) == before
    assert seeded.get(item["id"])["memory"] == "existing fact"


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    messages=st.one_of(st.none(), st.integers(), st.text(max_size=30), st.binary(max_size=10),
                       st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]),
                                                st.one_of(st.text(max_size=10), st.integers(),
                                                          st.none()), max_size=3), max_size=3)),
    user_id=st.one_of(st.none(), st.text(max_size=12), st.integers()),
    metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=5),
                                                  st.one_of(st.integers(), st.text(max_size=5),
                                                            st.floats()), max_size=3)),
)
def test_fuzzed_add_either_succeeds_or_fails_cleanly(seeded: Memory, messages: Any,
                                                     user_id: Any, metadata: Any) -> None:
    total, seq = seeded.store.total(), seeded.store.last_seq()
    try:
        result = seeded.add(messages, user_id=user_id, metadata=metadata, infer=False)
    except MemvaultError:
        assert (seeded.store.total(), seeded.store.last_seq()) == (total, seq)
        return
    created = sum(1 for r in result["results"] if r["event"] == "ADD")
    assert seeded.store.total() == total + created
    for item in result["results"]:
        assert seeded.get(item["id"]) is not None


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "memvault.db"
    path.write_bytes(b"this is a text file, not a database\n" * 10)
    with pytest.raises(SchemaError, match="not a SQLite database") as caught:
        SQLiteStore(path)
    assert "MEMVAULT_DATABASE_URL" in caught.value.hint
    assert path.read_bytes().startswith(b"this is a text file")  # untouched


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE history (id TEXT)")
    with pytest.raises(SchemaError, match="not a memvault store"):
        SQLiteStore(path)


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError, match="newer") as caught:
        SQLiteStore(path)
    assert "upgrade memvault" in caught.value.hint
