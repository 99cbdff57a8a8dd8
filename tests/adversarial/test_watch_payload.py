"""Whatever mem0's payload holds comes back exactly: the mapping (watch/payload.py) on
hypothesis-made JSON objects, through the mirror store and a backup's JSON lines; and hostile
payloads written into a real mem0-layout table, watched, backed up and restored with
`restore --to-mem0` into another table, compared value for value."""

from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from memvault.backup import jsonlines
from memvault.backup.catalog import list_backups
from memvault.backup.destinations import open_destinations
from memvault.config import load_settings
from memvault.store import MemoryRecord
from memvault.store.sqlite import SQLiteStore
from memvault.watch import Watcher, restore_to_mem0
from memvault.watch.payload import ABSENT, LIFTED, mem0_identity, payload_of, record_of
from tests.peers.embedding_server import EmbeddingServer

SEED = int(os.environ.get("MEMVAULT_FUZZ_SEED") or random.randrange(2**32))
print(f"watch payload seed: MEMVAULT_FUZZ_SEED={SEED}")

# jsonb holds no U+0000 in strings; everything else is fair.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-2**53, 2**53) | TEXT | st.floats(
    allow_nan=False, allow_infinity=False, width=32)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
KEYS = st.sampled_from([*LIFTED, "hash", "text_lemmatized", "metadata", "expiration_date",
                        "memory_type"]) | TEXT
PAYLOADS = st.dictionaries(KEYS, VALUES, max_size=10)


@seed(SEED)
@settings(max_examples=300, deadline=None)
@given(PAYLOADS)
def test_payload_round_trip(payload: dict[str, Any]) -> None:
    memory_id = str(uuid.uuid4())
    record = record_of(memory_id, payload)
    assert payload_of(record) == payload
    line = jsonlines.dumps(record)  # what a snapshot and a journal segment hold
    assert payload_of(MemoryRecord.from_dict(json.loads(line))) == payload


@seed(SEED)
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PAYLOADS, min_size=1, max_size=8))
def test_through_the_mirror_store(tmp_path: Path, payloads: list[dict[str, Any]]) -> None:
    store = SQLiteStore(tmp_path / f"{uuid.uuid4().hex}.db")
    try:
        identity = mem0_identity("memories", 3)
        store.register_embedder(identity)
        records = [record_of(str(uuid.uuid4()), p) for p in payloads]
        store.add(records, np.ones((len(records), 3), dtype=np.float32), identity.key, "t")
        for record, payload in zip(records, payloads, strict=True):
            got = store.get(record.id)
            assert got is not None and payload_of(got) == payload
    finally:
        store.close()


HOSTILE: list[dict[str, Any]] = [
    {"data": "plain", "hash": "x", "user_id": "u", "created_at": "c", "updated_at": "u"},
    {"data": 5, "user_id": None, "agent_id": ["list"], "created_at": {"nested": True}},
    {"user_id": "no text at all"},
    {"data": "", "run_id": "", "role": "", "hash": None, "updated_at": None},
    {"data": "ünïcødé ✓ \u2028 line sep", "user_id": "a/b%c", "metadata": {"k": [1, 2.5]},
     ABSENT.replace("\x00", "_"): "looks like the marker"},
    {"data": "x" * 3000, "agent_id": "a", "big": 2**53, "neg": -0.0, "deep": [[[[[]]]]]},
    {},
]


def test_hostile_payloads_survive_watch_backup_and_restore(pg_server: Any,
                                                           tmp_path: Path) -> None:
    source, target = ("w_" + uuid.uuid4().hex[:10] for _ in range(2))
    for name in (source, target):
        pg_server.psql(f"CREATE DATABASE {name};")
        pg_server.psql(f"\\c {name}\nCREATE EXTENSION IF NOT EXISTS vector;")
    src, dst = pg_server.get_uri(source), pg_server.get_uri(target)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("CREATE TABLE memories (id uuid PRIMARY KEY, vector vector(2), "
                     "payload jsonb)")
        for payload in HOSTILE:
            conn.execute("INSERT INTO memories VALUES (%s, '[0.6,0.8]', %s)",
                         (uuid.uuid4(), json.dumps(payload)))
        written = {str(i): p for i, p in conn.execute(
            "SELECT id, payload FROM memories").fetchall()}
    conf = load_settings({"data_dir": tmp_path / "data", "backup_urls": [str(tmp_path / "b")],
                          "journal_interval": "1s"})
    watcher = Watcher(conf, src)
    try:
        assert not watcher.check().firing()
        results = watcher.scheduler.snapshot_now()
        assert [r.status for r in results] == ["valid"], results
        # Later rows with times that are no times: journaled (they stamp no entry), shipped.
        with psycopg.connect(src, autocommit=True) as conn:
            for stamp in ("x", "2026-01-01T00:00:00", 17):
                conn.execute("INSERT INTO memories VALUES (%s, '[0.6,0.8]', %s)", (
                    uuid.uuid4(), json.dumps({"data": "late", "created_at": stamp,
                                              "updated_at": stamp, "user_id": "late"})))
            conn.execute("UPDATE memories SET payload = payload || '{\"updated_at\": \"y\"}'"
                         " WHERE payload->>'user_id' = 'u'")
            written = {str(i): p for i, p in conn.execute(
                "SELECT id, payload FROM memories").fetchall()}
        watcher.check()
        assert watcher.store.last_seq() == 4
        watcher.scheduler.ship_journal()
    finally:
        watcher.close()
    assert any(e.valid for e in list_backups(open_destinations(conf)[0]))
    # The journal's adds carry no vector: mem0's model (a peer here) makes theirs.
    with EmbeddingServer(dims=2) as peer:
        restore_to_mem0(load_settings({**conf.model_dump(), "embedder": "openai:m",
                                       "embedder_url": f"{peer.url}/v1"}), dst)
    with psycopg.connect(dst) as conn:
        back = {str(i): p for i, p in conn.execute("SELECT id, payload FROM memories")}
    assert back == written
    pg_server.psql(f"DROP DATABASE {source} WITH (FORCE); DROP DATABASE {target} WITH (FORCE);")
