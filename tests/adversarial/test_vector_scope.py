"""PostgreSQL keeps a copy of each memory's user/agent/run beside its vectors so a search in a
small scope can rank that scope alone. The attacker relabels vectors into another tenant's
scope, forges codes, and even corrupts the copy with the triggers off: no search may return a
memory outside its filter, and no ordinary write can make the copy disagree with the memory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import psycopg
import pytest

from memvault.store import parse_filters
from memvault.store.postgres import PostgresStore
from tests.helpers import identity, record


def _tenants(store: PostgresStore) -> tuple[str, list[str], list[str]]:
    ident = identity("tenants", 16)
    store.register_embedder(ident)
    victim = [record(f"victim secret {n}", user_id="victim") for n in range(30)]
    mallory = [record(f"mallory bait {n}", user_id="mallory") for n in range(30)]
    rng = np.random.default_rng(9)
    store.bulk_load([*victim, *mallory], {ident.key: rng.standard_normal((60, 16))})
    return ident.key, [r.id for r in victim], [r.id for r in mallory]


def test_relabelled_vectors_are_put_back(pg_store: PostgresStore, pg_url: str) -> None:
    key, victim, mallory = _tenants(pg_store)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE memvault.vectors SET user_id = 'victim' WHERE memory_id = ANY(%s)",
                     (mallory,))
        conn.execute("INSERT INTO memvault.vectors (memory_id, embedder_key, vector, user_id) "
                     "SELECT id, %s, vector, 'victim' FROM memvault.memories m, "
                     "(SELECT vector FROM memvault.vectors LIMIT 1) x WHERE m.id = %s "
                     "ON CONFLICT (memory_id, embedder_key) DO UPDATE SET user_id = 'victim'",
                     (key, mallory[0]))
        labels = dict(conn.execute("SELECT memory_id, user_id FROM memvault.vectors").fetchall())
        with pytest.raises(psycopg.errors.GeneratedAlways):
            conn.execute("UPDATE memvault.vectors SET code = B'1111111111111111'")
    assert {labels[i] for i in mallory} == {"mallory"}
    assert {labels[i] for i in victim} == {"victim"}


def test_a_corrupt_scope_copy_never_widens_a_search(pg_store: PostgresStore,
                                                    pg_url: str) -> None:
    """With the triggers off (a table owner can), mallory's vectors are labelled the
    victim's and the victim's own labelled mallory's. Searches still only return memories
    that pass their whole filter: the copy narrows what is looked at, never what is allowed."""
    key, victim, mallory = _tenants(pg_store)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE memvault.vectors DISABLE TRIGGER vectors_scope")
        conn.execute("UPDATE memvault.vectors SET user_id = CASE user_id WHEN 'victim' "
                     "THEN 'mallory' ELSE 'victim' END")
        conn.execute("ALTER TABLE memvault.vectors ENABLE TRIGGER vectors_scope")
    rng = np.random.default_rng(10)
    for user, own in (("victim", set(victim)), ("mallory", set(mallory))):
        node = parse_filters({"user_id": user})
        for query in rng.standard_normal((5, 16)):
            hits = pg_store.search_ids(query, key, node, 10)
            assert {i for i, _ in hits} <= own, user
    # metadata-free records in search(): each returned record belongs to the caller
    hits = pg_store.search(rng.standard_normal(16), key, parse_filters({"user_id": "victim"}),
                           60)
    assert {r.user_id for r, _ in hits} <= {"victim"}


def test_doctor_finds_a_corrupt_scope_copy_and_its_fix_works(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy parted from its memories (triggers off) makes small-scope searches miss
    memories: `memvault doctor` says so, CRITICAL, and the fix it names restores them."""
    from typer.testing import CliRunner

    from memvault.cli import app

    store = PostgresStore(pg_url)
    try:
        key, victim, _ = _tenants(store)
    finally:
        store.close()
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", pg_url)

    def scope_check() -> tuple[int, dict]:
        result = CliRunner().invoke(app, ["doctor", "--json"])
        report = json.loads(result.stdout)
        return result.exit_code, next(c for c in report["checks"] if c["name"] == "scope_copies")

    assert scope_check()[1]["status"] == "OK"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE memvault.vectors DISABLE TRIGGER vectors_scope")
        conn.execute("UPDATE memvault.vectors SET user_id = 'nobody' WHERE memory_id = ANY(%s)",
                     (victim[:7],))
    code, check = scope_check()
    assert code == 2 and check["status"] == "CRITICAL" and check["message"].startswith("7 ")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in re.findall(r"(ALTER TABLE [^)]*USER|UPDATE [^)]*memory_id)",
                                    check["hint"]):
            conn.execute(statement)
    assert scope_check()[1]["status"] == "OK"
    store = PostgresStore(pg_url)
    try:
        hits = store.search_ids(np.ones(16), key, parse_filters({"user_id": "victim"}), 30)
        assert {i for i, _ in hits} == set(victim)
    finally:
        store.close()


def test_doctor_says_why_it_could_not_count_the_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that is not there: doctor still finishes (CRITICAL store), and the copies'
    check says it could not count them instead of breaking the report."""
    from typer.testing import CliRunner

    from memvault.cli import app

    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", "postgresql://u:p@127.0.0.1:9/nowhere")
    monkeypatch.setenv("MEMVAULT_DB_TIMEOUT", "1")
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 2, result.stdout
    report = json.loads(result.stdout)
    check = next(c for c in report["checks"] if c["name"] == "scope_copies")
    assert check["status"] == "WARNING" and "could not be counted" in check["message"]
