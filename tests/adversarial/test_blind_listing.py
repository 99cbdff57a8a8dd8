"""An object store whose LIST answers nothing (lagging, or broken) while GET works: "I see no
ledger" must not mean "there is none" when the destination has ever held one. The destination
marker and the lineage head are read by GET; what they prove and no listing shows makes the
ledger unknown: an empty store is not accepted, not served and not marked first-seen."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memvault.backup.destinations import LocalDestination
from memvault.backup.head import register_lineage
from memvault.backup.snapshot import create_backup
from memvault.config import Settings
from memvault.embed.local import LocalEmbedder
from memvault.guard.api import Guard, guard_check
from memvault.memory import Memory
from tests.adversarial.test_forks import Heart, fill, shared_settings
from tests.test_guard import other_database, running, wait_for


class BlindList(LocalDestination):
    """GET, HEAD and PUT work; LIST answers no keys (what a lagging S3 listing returns)."""

    def list_sizes(self, prefix: str) -> dict[str, int]:
        return {}


def prod_with_history(settings: Settings, memory: Memory) -> LocalDestination:
    before = fill(memory)
    assert all(r.status == "valid" for r in create_backup(memory.store, settings))
    dest = LocalDestination(settings.data_dir / "backups")
    with running(Guard(settings, memory)):
        pass
    register_lineage(dest, memory.store.meta().lineage_id)  # what the shipper leaves
    Heart(dest, memory.store).beat(stopped=True)  # prod shut down cleanly
    assert sum(before.values())
    return dest


def test_an_empty_store_behind_a_blind_listing_is_unknown_then_restored(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    dest = prod_with_history(settings, memory)
    before = memory.store.counts()
    fresh_settings = shared_settings(settings, other_database(backend, tmp_path, request))
    with Memory(fresh_settings, embedder=local_embedder) as fresh:
        guard = Guard(fresh_settings, fresh)
        guard.destinations = [BlindList(dest.root)]
        with running(guard):
            empty = next(f for f in guard.verdict.firing() if f.alert == "StoreEmpty")
            assert "no listing shows" in empty.summary
            assert guard.verdict.accept is None and not guard.restore
            assert guard_check(guard)["ok"] is False
            own = fresh.store.meta().lineage_id
            assert dest.list(f"lineages/{own}/") == []  # never recorded as first-seen
            guard.destinations = [dest]  # the listing recovers
            guard.check()
            wait_for(lambda: guard.restore and guard.verdict and not guard.verdict.firing())
            assert fresh.store.counts() == before


def test_one_destination_listing_what_another_does_not_is_a_finding(
    settings: Settings, memory: Memory, tmp_path: Path,
) -> None:
    dest = prod_with_history(settings, memory)
    mirror = tmp_path / "mirror"
    shutil.copytree(dest.root, mirror)  # a second destination holding the same, listed blind
    guard = Guard(settings, memory)
    guard.destinations = [dest, BlindList(mirror)]
    with running(guard):
        assert any("listing is incomplete" in p for p in guard.ledger_problems), \
            guard.ledger_problems
        assert not {f.alert for f in guard.verdict.firing()} - {"ClockSkew"}
