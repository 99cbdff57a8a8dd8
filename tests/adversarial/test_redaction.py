"""A database password never shows, whatever spelling the URL gives it and wherever memvault
describes its configuration or state: REST /configure, /status, /readyz; CLI status, config
show and doctor, with --json and without. Unauthenticated /readyz shows no location either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memvault.cli.app import app as cli_app
from memvault.config import load_settings, public_settings, redact_url
from memvault.config.redact import Redactor
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.deps import runtime_of

PASSWORD = "Pw-Zq81xx-secret"
ADMIN = "admin-key-for-redaction-test"


def _parts(pg_url: str) -> tuple[str, str, str]:
    """(socket dir or host, user, database) of the test server's URL."""
    parsed = urlparse(pg_url)
    query = parse_qs(parsed.query)
    host = query.get("host", [parsed.hostname or "localhost"])[0]
    return host, parsed.username or "postgres", parsed.path.lstrip("/")


def _spellings(pg_url: str) -> dict[str, str]:
    host, user, database = _parts(pg_url)
    return {
        "query": f"postgresql:///{database}?host={host}&user={user}&password={PASSWORD}",
        "userinfo": f"postgresql://{user}:{PASSWORD}@/{database}?host={host}",
        "sslpassword": f"postgresql:///{database}?host={host}&user={user}"
                       f"&sslpassword={PASSWORD}&sslmode=disable",
    }


@pytest.mark.parametrize("text", [
    f"postgresql:///db?host=/run/pg&user=u&password={PASSWORD}",
    f"postgresql:///db?password={PASSWORD}&host=h",
    f"postgresql://u:{PASSWORD}@h:5432/db",
    f"host=h port=5432 password={PASSWORD} user=u",
    f"host=h password='{PASSWORD} with space' user=u",
    f"PGPASSWORD={PASSWORD} memvault serve",
    f"postgresql:///db?sslpassword={PASSWORD}",
    f"s3://bucket/prefix?secret_access_key={PASSWORD}",
    f"http://127.0.0.1:8080/v1?api_key={PASSWORD}",
])
def test_redact_url_hides_every_spelling(text: str) -> None:
    assert PASSWORD not in redact_url(text)
    assert "***" in redact_url(text)


def test_redactor_hides_literal_secrets_anywhere() -> None:
    redact = Redactor([PASSWORD, None, "abc"])
    assert redact(f"connection to x failed: {PASSWORD[:20]}") == "connection to x failed: ***"


@pytest.fixture(params=["query", "userinfo", "sslpassword"])
def secret_url(request: pytest.FixtureRequest, pg_url: str) -> str:
    return _spellings(pg_url)[request.param]


@pytest.fixture
def served(secret_url: str, tmp_path: Path, local_embedder: LocalEmbedder
           ) -> Iterator[tuple[TestClient, str]]:
    config = load_settings({"data_dir": tmp_path / "data", "database_url": secret_url,
                            "admin_api_key": ADMIN})
    with Memory(config, embedder=local_embedder) as memory:
        application = app_over(config, memory)
        with TestClient(application) as client:
            yield client, secret_url
        runtime_of(application).add_batcher.stop()
        runtime_of(application).embedder.stop()


def _outputs(client: TestClient) -> dict[str, str]:
    admin = {"X-API-Key": ADMIN}
    return {
        "/configure": client.get("/configure", headers=admin).text,
        "/status": client.get("/status", headers=admin).text,
        "/readyz admin": client.get("/readyz", headers=admin).text,
        "/readyz": client.get("/readyz").text,
    }


def test_rest_outputs_never_show_the_password(served: tuple[TestClient, str]) -> None:
    client, _ = served
    outputs = _outputs(client)
    assert json.loads(outputs["/configure"])["database_url"].count("***") == 1
    for name, body in outputs.items():
        assert PASSWORD not in body, name


def test_cli_outputs_never_show_the_password(
    secret_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", secret_url)
    monkeypatch.setenv("PGPASSWORD", PASSWORD + "-env")
    runner = CliRunner()
    for args in (["status", "--json"], ["status"], ["config", "show", "--json"],
                 ["config", "show"], ["doctor", "--json"], ["doctor"]):
        result = runner.invoke(cli_app, args)
        assert result.exit_code in (0, 1, 2), (args, result.output)
        assert PASSWORD not in result.output, args
    shown = json.loads(runner.invoke(cli_app, ["config", "show", "--json"]).output)
    assert "***" in shown["database_url"]["value"]


def test_status_shows_the_cluster_system_identifier(served: tuple[TestClient, str]) -> None:
    client, _ = served
    store = client.get("/status", headers={"X-API-Key": ADMIN}).json()["store"]
    assert store["system_identifier"] and store["system_identifier"].isdigit()
    assert store["created_on_system_identifier"] == store["system_identifier"]


def test_public_settings_hide_secrets_in_every_url(tmp_path: Path) -> None:
    config = load_settings({
        "data_dir": tmp_path, "database_url": f"postgresql:///db?password={PASSWORD}",
        "embedder_url": f"http://h/v1?api_key={PASSWORD}",
        "s3_endpoint_url": f"http://k:{PASSWORD}@h:9000",
        "backup_urls": [f"s3://b/p?secret_access_key={PASSWORD}"],
    })
    assert PASSWORD not in json.dumps(public_settings(config))


def test_unauthenticated_readyz_hides_where_the_data_lives(
    pg_url: str, tmp_path: Path, local_embedder: LocalEmbedder
) -> None:
    host, _, database = _parts(pg_url)
    config = load_settings({"data_dir": tmp_path / "data", "database_url": pg_url,
                            "admin_api_key": ADMIN})
    with Memory(config, embedder=local_embedder) as memory:
        application = app_over(config, memory)
        with TestClient(application) as client:
            assert client.get("/readyz").status_code == 200
            with psycopg.connect(pg_url.replace(database, "postgres"),
                                 autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {database} WITH (FORCE)")
            public = client.get("/readyz")
            admin = client.get("/readyz", headers={"X-API-Key": ADMIN})
            # Any other route's 5xx body, to a caller without the admin key, hides them too.
            failed = client.get("/memories", params={"user_id": "a"},
                                headers={"X-API-Key": "mvk_notakey_x"})
        runtime_of(application).add_batcher.stop()
        runtime_of(application).embedder.stop()
    assert public.status_code == admin.status_code == 503
    failing = public.json()["failing"]
    assert [c["name"] for c in failing][:1] == ["store"], failing
    assert failing[0]["code"]  # the reason stays
    for location in (host, database, str(tmp_path)):
        assert location not in public.text, location
    assert database in admin.text  # the admin still sees where
    assert failed.status_code == 503 and failed.json()["code"] == "datastore_unavailable"
    for location in (host, database):
        assert location not in failed.text, location


def test_unauthenticated_readyz_hides_the_sqlite_path(
    tmp_path: Path, local_embedder: LocalEmbedder
) -> None:
    from memvault.server.locations import LocationHider

    path = tmp_path / "store" / "memvault.db"
    config = load_settings({"data_dir": tmp_path / "data", "database_url": f"sqlite:///{path}",
                            "admin_api_key": ADMIN})
    hide = LocationHider(config)
    message = f"SQLite read from {path} failed: disk I/O error"
    assert hide(message) == "SQLite read from <hidden> failed: disk I/O error"
    with Memory(config, embedder=local_embedder) as memory:
        application = app_over(config, memory)
        with TestClient(application) as client:
            body = client.get("/readyz").text
            admin = client.get("/readyz", headers={"Authorization": f"Bearer {ADMIN}"}).text
        runtime_of(application).add_batcher.stop()
        runtime_of(application).embedder.stop()
    assert str(tmp_path) not in body
    assert json.loads(admin)["status"] == "ok"


def test_cli_hides_keys_in_embedder_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEMVAULT_EMBEDDER", "openai:text-embedding-3-small")
    # Nothing listens on port 9: the embedder's failure message quotes its URL.
    monkeypatch.setenv("MEMVAULT_EMBEDDER_URL", f"http://127.0.0.1:9/v1?api_key={PASSWORD}")
    monkeypatch.setenv("MEMVAULT_EMBEDDER_TIMEOUT", "1s")
    runner = CliRunner()
    for args in (["status", "--json"], ["config", "show", "--json"], ["doctor", "--json"],
                 ["add", "a fact", "--user-id", "u"]):
        result = runner.invoke(cli_app, args)
        assert PASSWORD not in result.output, (args, result.output)
