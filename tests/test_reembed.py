"""Online re-embedding (`memvault reembed`): bundled local model -> a real OpenAI-compatible
embedding server, on every backend; writes during the run, an embedder dying mid-run, restarts
with the new model, the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from memvault.cli.app import app
from memvault.config import Settings, load_settings
from memvault.embed import make_embedder
from memvault.errors import EmbedderMismatch
from memvault.memory import Memory
from memvault.memory.reembed import ReembedError, coverage, reembed
from tests.peers.embedding_server import EmbeddingServer

MODEL = "openai:test-model"
TEXTS = [
    "alice grows tomatoes on her balcony",
    "alice is allergic to peanuts",
    "alice flies to Lisbon in March",
    "alice prefers green tea over coffee",
    "bob repairs vintage bicycles",
    "bob plays the cello on sundays",
    "bob learns Portuguese for work",
    "bob keeps two cats called Miso and Tofu",
]


class ScriptedServer(EmbeddingServer):
    """The real embedding peer, with a hook run on every /v1/embeddings request (in the
    server's thread, so a hook that writes to the store is a concurrent writer)."""

    def __init__(self, dims: int, hook: Callable[[int], None]) -> None:
        super().__init__(dims)
        self.calls = 0
        self.hook = hook
        self.broken = False
        self.routes[("POST", "/v1/embeddings")] = self._scripted

    def _scripted(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        self.calls += 1
        self.hook(self.calls)
        if self.broken:
            return 500, {"error": "model crashed"}
        return self._openai(body, headers)


def _target_settings(base: Settings, url: str) -> Settings:
    return load_settings({"data_dir": base.data_dir, "database_url": base.database_url,
                          "embedder": MODEL, "embedder_url": url + "/v1"})


def _fill(memory: Memory) -> dict[str, str]:
    ids = {}
    for text in TEXTS:
        user = text.split()[0]
        ids[text] = memory.add(text, user_id=user, infer=False)["results"][0]["id"]
    return ids


def _top(memory: Memory, query: str, user: str) -> str:
    hits = memory.search(query, user_id=user, threshold=0.0)["results"]
    return str(hits[0]["memory"])


def test_backfill_switch_then_the_new_model_searches(memory: Memory, settings: Settings,
                                                     backend: str) -> None:
    ids = _fill(memory)
    old_key = memory.embedder_identity().key
    with EmbeddingServer(dims=48) as server:
        target_settings = _target_settings(settings, server.url)
        target = make_embedder(MODEL, target_settings)
        report = reembed(memory, target, batch=3)
        key = target.identity().key
        assert (report.switched, report.complete, report.embedded) == (True, True, len(TEXTS))
        assert report.plan.to_json()["dims"] == {"from": 384, "to": 48}
        assert memory.store.meta().active_embedder == key
        # Old vectors are kept: going back is a config change.
        assert memory.store.vector_counts() == {old_key: len(TEXTS), key: len(TEXTS)}
        if backend == "postgres":  # the target's HNSW index exists before anyone searches
            name = memory.store.hnsw_index_name(key)  # type: ignore[attr-defined]
            with psycopg.connect(str(settings.database_url)) as conn:
                row = conn.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON "
                                   "c.oid = i.indexrelid WHERE c.relname = %s",
                                   (name,)).fetchone()
            assert row == (True,)
        with Memory(target_settings) as restarted:  # a server restarted with the new model
            for text in ("bob keeps two cats called Miso and Tofu",
                         "alice is allergic to peanuts"):
                hit = restarted.search(text, user_id=text.split()[0], threshold=0.0)
                assert hit["results"][0]["id"] == ids[text]
        # A second run has nothing to do.
        again = reembed(memory.store, target)
        assert (again.embedded, again.caught_up, again.switched) == (0, 0, False)
    # Rollback: a process configured with the old model takes the store back (its vectors
    # still cover every memory), searching as before.
    with Memory(settings, embedder=memory.embedder) as rolled_back:
        assert _top(rolled_back, "peanut allergy", "alice") == "alice is allergic to peanuts"
        assert rolled_back.store.meta().active_embedder == old_key


def test_writes_during_the_run_are_covered(memory: Memory, settings: Settings) -> None:
    ids = _fill(memory)
    renamed = "alice moved her tomatoes to a community garden"

    def write_meanwhile(call: int) -> None:
        # call 1 = identity probes; then one call per page of 2. Writes land between pages
        # and after the pass (from the peer's thread: another writer on the same store).
        if call == 3:
            memory.add("bob bought a tandem bicycle", user_id="bob", infer=False)
            memory.update(ids["alice grows tomatoes on her balcony"], text=renamed)
            memory.delete(ids["bob plays the cello on sundays"])
        if call == 6:
            memory.add("alice adopted a tortoise named Sheldon", user_id="alice", infer=False)

    with ScriptedServer(48, write_meanwhile) as server:
        target_settings = _target_settings(settings, server.url)
        report = reembed(memory, make_embedder(MODEL, target_settings), batch=2)
        assert report.complete and report.switched, report.to_json()
        assert report.final.total == len(TEXTS) + 1  # +2 added, -1 deleted
        assert report.caught_up >= 3  # two adds and the re-texted memory
        with Memory(target_settings) as restarted:
            assert _top(restarted, "alice adopted a tortoise named Sheldon", "alice") \
                == "alice adopted a tortoise named Sheldon"
            assert _top(restarted, "bob bought a tandem bicycle", "bob") \
                == "bob bought a tandem bicycle"
            # The re-texted memory's vector is its new text's, not the one read first.
            hit = restarted.search(renamed, user_id="alice", threshold=0.0,
                                   search_mode="vector")["results"][0]
            assert (hit["id"], hit["memory"]) == (ids["alice grows tomatoes on her balcony"],
                                                  renamed)
            assert hit["score"] > 0.99


def test_embedder_dying_mid_run_switches_nothing_and_the_next_run_resumes(
        memory: Memory, settings: Settings) -> None:
    _fill(memory)
    old_key = memory.embedder_identity().key
    server: ScriptedServer

    def die_after_two_pages(call: int) -> None:
        if call == 3:
            server.broken = True

    with ScriptedServer(48, die_after_two_pages) as server:
        target_settings = _target_settings(settings, server.url)
        target = make_embedder(MODEL, target_settings)
        with pytest.raises(ReembedError) as caught:
            reembed(memory, target, batch=2)
        assert server.url in caught.value.message and "HTTP 500" in caught.value.message
        assert "resumes" in (caught.value.hint or "")
        key = target.identity().key
        assert memory.store.meta().active_embedder == old_key  # nothing switched
        done = coverage(memory.store, key)
        assert 0 < done.have < len(TEXTS)
        # The store is fully usable with the old model meanwhile.
        assert _top(memory, "peanut allergy", "alice") == "alice is allergic to peanuts"
        server.broken = False
        # A server restarted with the new model is refused while coverage is incomplete.
        with Memory(target_settings) as early:
            with pytest.raises(EmbedderMismatch) as refused:
                early.search("cats", user_id="bob")
            assert f"memvault reembed --embedder {MODEL}" in (refused.value.hint or "")
            assert f"for {done.have} of {len(TEXTS)} memories" in refused.value.message
        resumed = reembed(memory, target, batch=2)
        assert resumed.plan.to_json()["resumes_earlier_run"] is True
        assert resumed.embedded == len(TEXTS) - done.have  # only what was missing
        assert resumed.complete and resumed.switched


def test_wrong_dims_mid_run_is_a_clear_error(memory: Memory, settings: Settings) -> None:
    _fill(memory)
    server: ScriptedServer

    def swap_model(call: int) -> None:
        if call == 3:
            server.dims = 32

    with ScriptedServer(48, swap_model) as server:
        with pytest.raises(ReembedError) as caught:
            reembed(memory, make_embedder(MODEL, _target_settings(settings, server.url)),
                    batch=2)
        assert "changed dimension from 48 to 32" in caught.value.message
        assert memory.store.meta().active_embedder == memory.embedder_identity().key


def test_restart_with_new_embedder_takes_over_only_when_every_memory_is_covered(
        memory: Memory, settings: Settings) -> None:
    _fill(memory)
    old_key = memory.embedder_identity().key
    with EmbeddingServer(dims=48) as server:
        target_settings = _target_settings(settings, server.url)
        target = make_embedder(MODEL, target_settings)
        report = reembed(memory, target, switch=False)
        assert report.complete and not report.switched
        assert memory.store.meta().active_embedder == old_key
        memory.add("carol collects stamps", user_id="carol", infer=False)  # old model only
        with Memory(target_settings) as restarted:
            with pytest.raises(EmbedderMismatch) as refused:
                restarted.embedder_identity()
            assert f"for {len(TEXTS)} of {len(TEXTS) + 1} memories" in refused.value.message
            assert f"`memvault reembed --embedder {MODEL}`" in (refused.value.hint or "")
        assert reembed(memory, target, switch=False).caught_up + \
            reembed(memory, target, switch=False).embedded <= 1
        with Memory(target_settings) as restarted:
            assert _top(restarted, "carol collects stamps", "carol") == "carol collects stamps"
            assert restarted.store.meta().active_embedder == target.identity().key


def test_cli_dry_run_real_run_and_failure(memory: Memory, settings: Settings) -> None:
    _fill(memory)
    old_key = memory.embedder_identity().key
    cli = CliRunner()
    where = ["--data-dir", str(settings.data_dir), "--database-url", str(settings.database_url)]
    with EmbeddingServer(dims=48) as server:
        env = {"MEMVAULT_EMBEDDER_URL": server.url + "/v1"}
        dry = cli.invoke(app, [*where, "reembed", "--embedder", MODEL, "--dry-run", "--json"],
                         env=env)
        assert dry.exit_code == 0, dry.output
        plan = json.loads(dry.stdout)["plan"]
        assert (plan["memories"], plan["have_target_vector"], plan["to_embed"]) == (8, 0, 8)
        assert plan["dims"] == {"from": 384, "to": 48} and plan["active"] == old_key
        assert memory.store.meta().active_embedder == old_key  # dry run changed nothing
        done = cli.invoke(app, [*where, "reembed", "--embedder", MODEL, "--yes"], env=env)
        assert done.exit_code == 0, done.output
        assert "active embedder is now openai:test-model:48" in done.stdout
        assert f"MEMVAULT_EMBEDDER={MODEL}" in done.stdout
        found = cli.invoke(app, [*where, "--embedder", MODEL, "search", "cello",
                                 "--user-id", "bob", "--json"], env=env)
        assert found.exit_code == 0, found.output
        assert json.loads(found.stdout)["results"][0]["memory"] == "bob plays the cello on sundays"
        url = server.url
    # The embedder is gone: exit 1, the address it tried, what to do.
    down = cli.invoke(app, [*where, "reembed", "--embedder", "openai:other-model", "--json"],
                      env={"MEMVAULT_EMBEDDER_URL": url + "/v1"})
    assert down.exit_code == 1
    assert url in down.stderr and "what to do" in down.stderr
    refused = cli.invoke(app, [*where, "reembed", "--embedder", MODEL, "--drop-old"], env=env)
    assert refused.exit_code == 1 and "--drop-old" in refused.stderr
