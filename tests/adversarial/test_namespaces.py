"""Distinct (user_id, agent_id, run_id) triples are distinct namespaces, whatever ids hold.

The attack: ids may contain the key's separators, so `user_id="x", agent_id="y/run:z"` once
shared a namespace with `user_id="x", agent_id="y", run_id="z"`, and the second tenant's add of
the same text answered NONE with the first tenant's memory id, storing nothing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.store import SCHEMA_VERSION, open_store
from memvault.store.postgres import SCHEMA
from memvault.store.records import legacy_namespace_key, namespace_key

ATTACKER = {"user_id": "x", "agent_id": "y/run:z"}
VICTIM = {"user_id": "x", "agent_id": "y", "run_id": "z"}

# Ids built from the characters that matter to the encoding, plus anything else.
_id = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from("/%:2Fuseragntrx5"), min_size=1, max_size=8),
    st.text(min_size=1, max_size=12),
)


@settings(max_examples=3000, deadline=None, print_blob=True)
@given(a=st.tuples(_id, _id, _id), b=st.tuples(_id, _id, _id))
def test_distinct_triples_never_share_a_namespace_key(
    a: tuple[str | None, ...], b: tuple[str | None, ...]
) -> None:
    if a != b:
        assert namespace_key(*a) != namespace_key(*b)


def _decode(key: str) -> tuple[str | None, ...]:
    """The inverse a reader (jq, a script) would write: split on '/', then unescape."""
    found: dict[str, str] = {}
    for part in key.split("/") if key else []:
        kind, sep, value = part.partition(":")
        assert sep and kind in ("user", "agent", "run") and kind not in found, key
        found[kind] = value.replace("%2F", "/").replace("%25", "%")
    return tuple(found.get(kind) for kind in ("user", "agent", "run"))


@settings(max_examples=1500, deadline=None, print_blob=True)
@given(triple=st.tuples(_id, _id, _id))
def test_every_key_decodes_to_its_triple(triple: tuple[str | None, ...]) -> None:
    assert _decode(namespace_key(*triple)) == triple


def test_the_legacy_encoding_collided_and_the_new_one_keeps_plain_keys() -> None:
    victim = (VICTIM["user_id"], VICTIM["agent_id"], VICTIM["run_id"])
    attacker = (ATTACKER["user_id"], ATTACKER["agent_id"], None)
    assert legacy_namespace_key(*victim) == legacy_namespace_key(*attacker)
    assert namespace_key(*victim) != namespace_key(*attacker)
    # Ids without '%' or '/' keep the key they always had: normal stores need no rewrite.
    assert namespace_key("alice", "bot:1", None) == "user:alice/agent:bot:1"
    assert namespace_key("a/b", None, "100%") == "user:a%2Fb/run:100%25"


def test_same_text_in_the_colliding_triple_is_a_new_memory(memory: Memory) -> None:
    first = memory.add("I like tea", **ATTACKER, infer=False)["results"][0]
    second = memory.add("I like tea", **VICTIM, infer=False)["results"][0]
    assert second["event"] == "ADD", second
    assert second["id"] != first["id"]
    assert memory.get(second["id"])["run_id"] == "z"
    assert len(memory.store.counts()) == 2
    victim_view = memory.get_all(**VICTIM)["results"]
    assert [m["id"] for m in victim_view] == [second["id"]]


def test_same_text_in_the_colliding_triple_over_rest(client: Any) -> None:
    body = {"messages": [{"role": "user", "content": "I like tea"}], "infer": False}
    first = client.post("/memories", json={**body, **ATTACKER})
    second = client.post("/memories", json={**body, **VICTIM})
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    added = second.json()["results"][0]
    assert added["event"] == "ADD", added
    assert added["id"] != first.json()["results"][0]["id"]
    listed = client.get("/memories", params=VICTIM).json()["results"]
    assert [m["id"] for m in listed] == [added["id"]]


# ---------------------------------------------------------------- stores of schema version 1

_TRIPLES = [
    ("x", "y/run:z", None),      # re-keyed: its old key is the victim's
    ("a%2Fb", None, None),       # old key "user:a%2Fb" is the new key of ("a/b", ...)
    ("a/b", None, None),
    ("plain", "agent", "run"),   # untouched
]


def _downgrade_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        rows = conn.execute("SELECT id, user_id, agent_id, run_id FROM memories").fetchall()
        for memory_id, *_ in rows:
            # The stand-in first: old keys of different rows may meet on the way back too.
            conn.execute("UPDATE memories SET namespace = ? WHERE id = ?",
                         ("\x01" + memory_id, memory_id))
        for memory_id, user_id, agent_id, run_id in rows:
            conn.execute("UPDATE memories SET namespace = ? WHERE id = ?",
                         (legacy_namespace_key(user_id, agent_id, run_id), memory_id))
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute("PRAGMA user_version = 1")
    conn.close()


def _downgrade_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=False) as conn:
        rows = conn.execute(f"SELECT id, user_id, agent_id, run_id FROM {SCHEMA}.memories"
                            ).fetchall()
        for memory_id, *_ in rows:
            conn.execute(f"UPDATE {SCHEMA}.memories SET namespace = %s WHERE id = %s",
                         ("\x01" + memory_id, memory_id))
        for memory_id, user_id, agent_id, run_id in rows:
            conn.execute(f"UPDATE {SCHEMA}.memories SET namespace = %s WHERE id = %s",
                         (legacy_namespace_key(user_id, agent_id, run_id), memory_id))
        conn.execute(f"UPDATE {SCHEMA}.meta SET value = '1' WHERE key = 'schema_version'")


def _stored_namespaces(url: str) -> dict[str, str]:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return dict(conn.execute("SELECT id, namespace FROM memories").fetchall())
        finally:
            conn.close()
    with psycopg.connect(url) as pg:
        return dict(pg.execute(f"SELECT id, namespace FROM {SCHEMA}.memories").fetchall())


def test_a_store_written_with_the_old_encoding_is_migrated_on_open(
    tmp_path: Path, database_url: str, local_embedder: LocalEmbedder
) -> None:
    config = load_settings({"data_dir": tmp_path / "data", "database_url": database_url})
    ids = {}
    with Memory(config, embedder=local_embedder) as memory:
        for triple in _TRIPLES:
            kwargs = dict(zip(("user_id", "agent_id", "run_id"), triple, strict=True))
            ids[triple] = memory.add("shared text", **kwargs, infer=False)["results"][0]["id"]
        seq = memory.store.last_seq()
    if database_url.startswith("sqlite:///"):
        _downgrade_sqlite(Path(database_url.removeprefix("sqlite:///")))
    else:
        _downgrade_postgres(database_url)
    assert _stored_namespaces(database_url)[ids[_TRIPLES[0]]] == "user:x/agent:y/run:z"

    store = open_store(config)
    try:
        assert store.meta().schema_version == SCHEMA_VERSION >= 2
        assert store.last_seq() == seq  # a migration is not a mutation: no journal entries
        assert store.counts() == {namespace_key(*t): 1 for t in _TRIPLES}
    finally:
        store.close()
    stored = _stored_namespaces(database_url)
    assert {stored[ids[t]] for t in _TRIPLES} == {namespace_key(*t) for t in _TRIPLES}

    with Memory(config, embedder=local_embedder) as memory:
        added = memory.add("shared text", **VICTIM, infer=False)["results"][0]
        assert added["event"] == "ADD" and added["id"] not in ids.values()
        again = memory.add("shared text", user_id="a/b", infer=False)["results"][0]
        assert (again["event"], again["id"]) == ("NONE", ids[("a/b", None, None)])


@pytest.mark.parametrize("value", ["%", "/", "%2F", "a/b%25c", "ü/ß"])
def test_escaped_ids_round_trip_through_the_store(memory: Memory, value: str) -> None:
    added = memory.add("round trip", user_id=value, infer=False)["results"][0]
    assert memory.get(added["id"])["user_id"] == value
    assert list(memory.store.counts()) == [namespace_key(value, None, None)]
    assert json.loads(json.dumps(memory.entities()))[0]["id"] == value


def test_an_entity_whose_id_holds_a_slash_can_be_deleted_over_rest(client: Any) -> None:
    body = {"messages": [{"role": "user", "content": "to delete"}], "infer": False}
    assert client.post("/memories", json={**body, "user_id": "a/b"}).status_code == 200
    assert client.post("/memories", json={**body, "user_id": "a"}).status_code == 200
    answer = client.delete("/entities/user/a%2Fb")
    assert answer.status_code == 200, answer.text
    assert client.get("/memories", params={"user_id": "a/b"}).json()["results"] == []
    assert len(client.get("/memories", params={"user_id": "a"}).json()["results"]) == 1
