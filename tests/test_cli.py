"""The memvault command line: --json output, exit codes, messages that say what to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memvault.cli import app
from tests.peers.embedding_server import EmbeddingServer


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def test_add_then_search_json(cli: CliRunner) -> None:
    added = cli.invoke(app, ["add", "Alice drinks green tea every morning", "--user-id", "alice",
                             "--metadata", '{"topic": "drinks"}', "--json"])
    assert added.exit_code == 0, added.output
    memory_id = json.loads(added.output)["results"][0]["id"]
    cli.invoke(app, ["add", "Alice owns a red car", "--user-id", "alice"])
    found = cli.invoke(app, ["search", "what does alice drink", "--user-id", "alice", "--json"])
    assert found.exit_code == 0, found.output
    results = json.loads(found.output)["results"]
    assert results[0]["id"] == memory_id and results[0]["metadata"] == {"topic": "drinks"}
    filtered = cli.invoke(app, ["search", "car", "--threshold", "0", "--filters",
                                '{"user_id": "alice", "topic": "drinks"}', "--json"])
    assert [r["id"] for r in json.loads(filtered.output)["results"]] == [memory_id]


def test_human_output(cli: CliRunner) -> None:
    out = cli.invoke(app, ["add", "Bob likes jazz", "--user-id", "bob"])
    assert out.exit_code == 0 and "added" in out.output
    again = cli.invoke(app, ["add", "Bob likes jazz", "--user-id", "bob"])
    assert "already stored" in again.output
    found = cli.invoke(app, ["search", "music", "--user-id", "bob"])
    assert "Bob likes jazz" in found.output


def test_errors_exit_1_with_a_next_step(cli: CliRunner) -> None:
    out = cli.invoke(app, ["search", "anything"])
    assert out.exit_code == 1
    assert "user_id, agent_id or run_id" in out.output and "what to do" in out.output
    bad = cli.invoke(app, ["add", "x", "--user-id", "a", "--metadata", "{nope"])
    assert bad.exit_code == 1 and "--metadata is not valid JSON" in bad.output


def test_usage_error_exits_2(cli: CliRunner) -> None:
    assert cli.invoke(app, ["search"]).exit_code == 2
    assert cli.invoke(app, ["no-such-command"]).exit_code == 2


def test_status_ok_and_warning(cli: CliRunner) -> None:
    empty = cli.invoke(app, ["status", "--json"])
    report = json.loads(empty.output)
    assert empty.exit_code == 1 and report["status"] == "WARNING"
    assert any(c["name"] == "contents" for c in report["checks"])
    cli.invoke(app, ["add", "one fact", "--user-id", "alice"])
    cli.invoke(app, ["add", "two fact", "--agent-id", "bot"])
    ok = cli.invoke(app, ["status", "--json"])
    report = json.loads(ok.output)
    assert ok.exit_code == 0 and report["status"] == "OK"
    assert report["memories"] == {"total": 2, "namespaces": {"agent:bot": 1, "user:alice": 1},
                                  "unqueryable": 0}
    assert report["embedders"]["active"] == "local:all-MiniLM-L6-v2-q8:384"
    assert report["store"]["backend"] == "sqlite" and report["store"]["last_seq"] == 2
    human = cli.invoke(app, ["status"])
    assert "OK" in human.output and "user:alice" in human.output


def test_status_critical_on_embedder_mismatch(cli: CliRunner) -> None:
    cli.invoke(app, ["add", "made by the local model", "--user-id", "alice"])
    with EmbeddingServer(dims=768) as server:
        out = cli.invoke(app, ["--embedder", "ollama:nomic", "status", "--json"],
                         env={"MEMVAULT_EMBEDDER_URL": server.url})
    report = json.loads(out.output)
    assert out.exit_code == 2 and report["status"] == "CRITICAL"
    failing = [c for c in report["checks"] if c["status"] == "CRITICAL"]
    assert failing[0]["name"] == "embedder"
    assert "local:all-MiniLM-L6-v2-q8:384" in failing[0]["message"]


def test_status_critical_when_store_cannot_open(cli: CliRunner, tmp_path: Path) -> None:
    bogus = tmp_path / "notadb.db"
    bogus.write_text("garbage" * 100)
    out = cli.invoke(app, ["--database-url", f"sqlite:///{bogus}", "status", "--json"])
    assert out.exit_code == 2
    assert "not a SQLite database" in json.loads(out.output)["checks"][0]["message"]


def test_entry_point_runs_as_a_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "memvault", "--data-dir", str(tmp_path), "config", "show",
         "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data_dir"]["source"] == "flag"


def test_embedder_switch_follows_the_hint_end_to_end(cli: CliRunner) -> None:
    """The mismatch error tells what to do; doing exactly that makes the store searchable."""
    with EmbeddingServer(dims=64) as server:
        old = {"MEMVAULT_EMBEDDER": "openai:old-model", "MEMVAULT_EMBEDDER_URL": server.url + "/v1"}
        new = {"MEMVAULT_EMBEDDER": "ollama:new-model", "MEMVAULT_EMBEDDER_URL": server.url}
        for text in ("alice paints watercolours", "alice keeps bees"):
            assert cli.invoke(app, ["add", text, "--user-id", "alice"], env=old).exit_code == 0
        server.dims = 32
        refused = cli.invoke(app, ["search", "bees", "--user-id", "alice"], env=new)
        assert refused.exit_code == 1
        assert "memvault backup create" in refused.output
        assert "memvault restore latest --yes" in refused.output
        assert cli.invoke(app, ["backup", "create"], env=new).exit_code == 0
        restored = cli.invoke(app, ["restore", "latest", "--yes"], env=new)
        assert restored.exit_code == 0, restored.output
        found = cli.invoke(app, ["search", "bees", "--user-id", "alice", "--threshold", "0",
                                 "--json"], env=new)
        assert found.exit_code == 0, found.output
        memories = [r["memory"] for r in json.loads(found.output)["results"]]
        assert sorted(memories) == ["alice keeps bees", "alice paints watercolours"]
        status = cli.invoke(app, ["status", "--json"], env=new)
        assert json.loads(status.output)["embedders"]["active"] == "ollama:new-model:32"
