"""PostgreSQL going away, freezing and coming back; wrong credentials; a missing database.

Every failure must be a StoreUnavailable within the configured timeout, logged with host, port,
database and user (never the password), and the store must work again without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from memvault.cli.app import app
from memvault.errors import StoreError, StoreUnavailable
from memvault.store.postgres import PostgresStore
from tests.helpers import prepared, record, vectors
from tests.pg_cluster import Cluster

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    own = Cluster()
    yield own
    own.close()


@pytest.fixture
def pg_store(cluster: Cluster) -> Iterator[PostgresStore]:
    opened = PostgresStore(cluster.create_database(), timeout=TIMEOUT)
    yield opened
    opened.close()


def _eventually(action: Any, within: float) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            return action()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _unavailable_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "memvault.store.postgres" and "unavailable" in r.getMessage()]


def test_server_stopped_mid_session_fails_fast_then_recovers(
    cluster: Cluster, pg_store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    ident = prepared(pg_store)
    rec = record("survives the outage")
    pg_store.add([rec], vectors(1), ident.key, None)
    caplog.set_level(logging.WARNING, logger="memvault.store.postgres")
    cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as failure:
            pg_store.get(rec.id)
        elapsed = time.monotonic() - started
        assert elapsed < TIMEOUT + 1.5, f"took {elapsed:.1f}s with a {TIMEOUT}s timeout"
        assert failure.value.code == "datastore_unavailable"
        assert pg_store.target.database in str(failure.value)
        with pytest.raises(StoreUnavailable):
            pg_store.add([record("written while down")], vectors(1), ident.key, None)
    finally:
        cluster.start()
    lines = _unavailable_logs(caplog)
    assert lines, "the outage was not logged"
    target = pg_store.target
    assert all(f"host={target.host}" in line and f"port={target.port}" in line
               and f"database={target.database}" in line and f"user={target.user}" in line
               for line in lines)
    # Back without a restart: the pool replaces its dead connections on its own.
    assert _eventually(lambda: pg_store.get(rec.id), within=15) == rec
    assert pg_store.search(vectors(1)[0], ident.key, None, 1)[0][0].id == rec.id
    assert pg_store.total() == 1  # the write refused during the outage did not half-happen


def test_frozen_server_times_out_instead_of_hanging(
    cluster: Cluster, pg_store: PostgresStore
) -> None:
    ident = prepared(pg_store)
    rec = record("frozen")
    pg_store.add([rec], vectors(1), ident.key, None)
    cluster.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            pg_store.search(vectors(1)[0], ident.key, None, 3)
        elapsed = time.monotonic() - started
        assert elapsed < TIMEOUT + 1.5, f"took {elapsed:.1f}s with a {TIMEOUT}s timeout"
    finally:
        cluster.thaw()
    assert _eventually(lambda: pg_store.get(rec.id), within=15) == rec


def test_terminated_sessions_are_replaced_transparently(
    cluster: Cluster, pg_store: PostgresStore
) -> None:
    ident = prepared(pg_store)
    rec = record("after terminate")
    pg_store.add([rec], vectors(1), ident.key, None)
    killed = cluster.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE application_name = 'memvault' AND datname = '{pg_store.target.database}';")
    assert "1" in killed or "2" in killed
    # The pool's checkout check finds the dead session and hands out a fresh one.
    assert pg_store.get(rec.id) == rec
    pg_store.add([record("and writes")], vectors(1, seed=2), ident.key, None)
    assert pg_store.total() == 2


def test_wrong_password_names_what_was_tried(pg_server: Any, pg_url: str) -> None:
    # A real password check: a role with a SCRAM password and a pg_hba line that demands it.
    pg_server.psql("DROP ROLE IF EXISTS mv_secret; "
                   "CREATE ROLE mv_secret LOGIN SUPERUSER PASSWORD 'right-horse-battery';")
    hba = Path(pg_server.pgdata) / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("local all mv_secret scram-sha-256\n" + original)
    pg_server.psql("SELECT pg_reload_conf();")
    try:
        params = conninfo_to_dict(pg_url)
        database, socket = params["dbname"], params["host"]
        wrong = f"postgresql://mv_secret:wrong-password-123@/{database}?host={socket}"
        with pytest.raises(StoreUnavailable) as failure:
            PostgresStore(wrong, timeout=TIMEOUT)
        message = str(failure.value)
        assert "wrong-password-123" not in message
        assert "mv_secret" in message and database in message and "***" in message
        assert "password" in (failure.value.hint or "")
        right = wrong.replace("wrong-password-123", "right-horse-battery")
        opened = PostgresStore(right, timeout=TIMEOUT)  # proves the setup, not just a refusal
        assert opened.total() == 0
        opened.close()
    finally:
        hba.write_text(original)
        pg_server.psql("SELECT pg_reload_conf();")


def test_missing_database_is_a_clear_error(pg_server: Any) -> None:
    url = pg_server.get_uri("no_such_database_here")
    with pytest.raises(StoreError) as failure:
        PostgresStore(url, timeout=TIMEOUT)
    assert "no_such_database_here" in str(failure.value)
    assert "createdb" in (failure.value.hint or "")


def test_cli_exits_non_zero_naming_the_database(pg_server: Any) -> None:
    url = pg_server.get_uri("no_such_database_cli")
    result = CliRunner().invoke(app, ["--database-url", url, "search", "x", "--user-id", "u"])
    assert result.exit_code != 0
    assert "no_such_database_cli" in result.output


def test_http_answers_503_during_an_outage_and_serves_after(
    cluster: Cluster, tmp_path: Path, local_embedder: Any
) -> None:
    from fastapi.testclient import TestClient

    from memvault.config import load_settings
    from memvault.memory import Memory
    from memvault.server.app import app_over
    from memvault.server.deps import runtime_of

    settings = load_settings({"data_dir": tmp_path / "data", "db_timeout": TIMEOUT,
                              "database_url": cluster.create_database()})
    with Memory(settings, embedder=local_embedder) as memory:
        app = app_over(settings, memory)
        with TestClient(app) as client:
            added = client.post("/memories", json={
                "messages": [{"role": "user", "content": "I keep bees on the roof"}],
                "user_id": "alice", "infer": False})
            assert added.status_code == 200, added.text
            cluster.stop()
            try:
                started = time.monotonic()
                down = client.post("/search", json={"query": "bees", "user_id": "alice"})
                assert time.monotonic() - started < TIMEOUT + 2
                assert down.status_code == 503
                assert down.json()["code"] == "datastore_unavailable"
            finally:
                cluster.start()
            deadline = time.monotonic() + 15
            while True:
                up = client.post("/search", json={"query": "bees", "user_id": "alice"})
                if up.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert up.status_code == 200
            assert up.json()["results"][0]["memory"] == "I keep bees on the roof"
        runtime_of(app).add_batcher.stop()


def test_tables_dropped_behind_a_running_store_is_a_schema_error(
    pg_url: str,
) -> None:
    import psycopg

    from memvault.errors import SchemaError

    store = PostgresStore(pg_url, timeout=TIMEOUT)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA memvault CASCADE")
    with pytest.raises(SchemaError) as failure:
        store.total()
    assert "gone" in str(failure.value) and "restart" in (failure.value.hint or "")
    store.close()
