"""The store records which cluster, address and database it was created on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from memvault.store.postgres import PostgresStore
from tests.pg_cluster import Cluster


def _system_identifier(server: Any) -> str:
    out = server.psql("SELECT 'sysid=' || system_identifier FROM pg_control_system();")
    return out.split("sysid=")[1].split()[0]


def test_meta_records_cluster_address_and_database(pg_server: Any, pg_url: str) -> None:
    store = PostgresStore(pg_url)
    extra = store.meta().extra
    params = conninfo_to_dict(pg_url)
    assert extra["pg_system_identifier"] == _system_identifier(pg_server)
    assert extra["pg_database"] == params["dbname"]
    assert extra["pg_host"] == params["host"]
    assert extra["pg_port"] == 5432
    assert extra["pg_connected"]["system_identifier"] == extra["pg_system_identifier"]
    assert store.server_identity()["database"] == params["dbname"]
    store_id = store.meta().store_id
    store.close()
    reopened = PostgresStore(pg_url)  # reopening neither migrates again nor changes identity
    assert reopened.meta().store_id == store_id
    assert reopened.meta().extra["pg_system_identifier"] == extra["pg_system_identifier"]
    reopened.close()


@pytest.fixture
def other_cluster() -> Iterator[Cluster]:
    own = Cluster()
    yield own
    own.close()


def test_recreated_or_swapped_database_is_distinguishable(
    pg_server: Any, pg_url: str, other_cluster: Cluster
) -> None:
    first = PostgresStore(pg_url)
    before = first.meta()
    first.close()
    # Same name, recreated: a new store (new id) on the same cluster.
    name = conninfo_to_dict(pg_url)["dbname"]
    pg_server.psql(f"DROP DATABASE {name} WITH (FORCE); CREATE DATABASE {name};")
    recreated = PostgresStore(pg_url)
    after = recreated.meta()
    recreated.close()
    assert after.store_id != before.store_id and after.lineage_id != before.lineage_id
    assert after.extra["pg_system_identifier"] == before.extra["pg_system_identifier"]
    # Another cluster behind a URL: a different system identifier, recorded and live.
    elsewhere = PostgresStore(other_cluster.create_database())
    swapped = elsewhere.meta()
    elsewhere.close()
    assert swapped.extra["pg_system_identifier"] != before.extra["pg_system_identifier"]
    assert swapped.extra["pg_connected"]["system_identifier"] \
        == swapped.extra["pg_system_identifier"]


def test_location_never_shows_the_password(pg_url: str) -> None:
    params = conninfo_to_dict(pg_url)
    url = f"postgresql://postgres:hunter2-secret@/{params['dbname']}?host={params['host']}"
    store = PostgresStore(url)  # trust auth ignores the password, the URL still carries it
    meta = store.meta()
    store.close()
    assert "hunter2-secret" not in repr(meta)
    assert "***" in meta.location
    as_param = f"postgresql:///{params['dbname']}?host={params['host']}&user=postgres" \
               "&password=hunter3-secret"
    store = PostgresStore(as_param)
    assert "hunter3-secret" not in repr(store.meta())
    store.close()
