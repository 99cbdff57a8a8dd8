"""A wall clock that ran ahead (a wrong RTC, a restored VM) or was stepped back (an NTP fix)
while backups were taken: "newest", "latest", retention and the journal floor follow seq,
ages survive a restart, durations use a monotonic clock, and future stamps are findings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from memvault.backup import (
    VALID,
    JournalShipper,
    apply_prune,
    create_backup,
    list_backups,
    newest_valid,
    open_destinations,
    plan_prune,
    run_restore,
)
from memvault.backup.clock import clock_skew_findings, seed_backup_metrics
from memvault.backup.destinations import LocalDestination
from memvault.backup.format import MANIFEST, snapshot_key
from memvault.config import Settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.store import Store, open_store

AHEAD = timedelta(days=400)


def _add(memory: Memory, n: int, tag: str) -> None:
    memory.add([{"role": "user", "content": f"{tag} fact {i}"} for i in range(n)],
               user_id="alice", infer=False)


def _at(offset: timedelta) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + offset


@pytest.fixture
def target(settings: Settings, tmp_path: Path) -> Iterator[tuple[Store, Settings]]:
    other = settings.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'target' / 'restored.db'}",
        "data_dir": tmp_path / "target-data"})
    store = open_store(other)
    yield store, other.model_copy(update={"backup_urls": settings.backup_urls})
    store.close()


@pytest.mark.parametrize(("older", "newer"), [(AHEAD, timedelta(0)),  # corrected after +400 d
                                              (timedelta(0), -timedelta(days=1))])  # stepped back
def test_newest_and_retention_follow_seq_not_the_clock(
        memory: Memory, settings: Settings, target: tuple[Store, Settings],
        local_embedder: LocalEmbedder, older: timedelta, newer: timedelta) -> None:
    _add(memory, 3, "first")
    (first,) = create_backup(memory.store, settings, clock=_at(older))
    _add(memory, 3, "second")
    (second,) = create_backup(memory.store, settings, clock=_at(newer))
    assert (first.status, second.status) == (VALID, VALID)
    _add(memory, 3, "after")
    JournalShipper(memory.store, settings).ship()
    dest = open_destinations(settings)[0]
    entries = list_backups(dest)
    assert [e.id for e in entries] == [first.id, second.id]  # oldest (lowest seq) first
    found = newest_valid(entries)
    assert found is not None and found.id == second.id

    plan = plan_prune(dest, {"last": 1, "daily": 1})
    assert second.id in plan.keep and first.id in plan.delete
    apply_prune(plan)
    store, target_settings = target
    report = run_restore(store, target_settings, local_embedder)
    assert report.plan.manifest.id == second.id
    assert store.counts() == memory.store.counts() == {"user:alice": 9}


def test_future_stamps_are_findings_naming_both_times(memory: Memory, settings: Settings
                                                      ) -> None:
    _add(memory, 2, "now")
    (honest,) = create_backup(memory.store, settings)
    dest = open_destinations(settings)[0]
    assert clock_skew_findings([dest]) == []
    assert REGISTRY.get_sample_value("memvault_backup_clock_skew_seconds",
                                     {"destination": dest.url}) == 0
    _add(memory, 2, "ahead")
    (ahead,) = create_backup(memory.store, settings, clock=_at(AHEAD))
    assert (honest.status, ahead.status) == (VALID, VALID)
    findings = clock_skew_findings([dest])
    folder = next(e.folder for e in list_backups(dest) if e.id == ahead.id)
    assert {f.artifact for f in findings} == {snapshot_key(folder, MANIFEST)}
    message = findings[0].message()
    assert findings[0].stamped.isoformat() in message and findings[0].now.isoformat() in message
    assert findings[0].ahead_seconds > 399 * 86400
    skew = REGISTRY.get_sample_value("memvault_backup_clock_skew_seconds",
                                     {"destination": dest.url})
    assert skew is not None and skew > 399 * 86400
    # Seen from a clock 401 days on, nothing is ahead any more.
    assert clock_skew_findings([dest], clock=_at(timedelta(days=401))) == []


def test_backup_age_after_a_restart_comes_from_the_newest_backup_by_seq(
        memory: Memory, settings: Settings) -> None:
    _add(memory, 2, "a")
    create_backup(memory.store, settings, clock=_at(-timedelta(hours=5)))
    _add(memory, 2, "b")
    create_backup(memory.store, settings, clock=_at(-timedelta(hours=2)))
    dest = open_destinations(settings)[0]
    gauge = "memvault_backup_last_success_timestamp_seconds"
    seed_backup_metrics([dest])
    seeded = REGISTRY.get_sample_value(gauge, {"destination": dest.url})
    expected = datetime.now(UTC) - timedelta(hours=2)
    assert seeded is not None and abs(seeded - expected.timestamp()) < 60
    # The newest by seq stamped in the future: its age is 0 from here, never negative.
    _add(memory, 2, "c")
    create_backup(memory.store, settings, clock=_at(AHEAD))
    seed_backup_metrics([dest])
    seeded = REGISTRY.get_sample_value(gauge, {"destination": dest.url})
    assert seeded is not None and seeded <= datetime.now(UTC).timestamp()
    assert seeded > (datetime.now(UTC) - timedelta(minutes=5)).timestamp()


def test_journal_lag_is_monotonic(memory: Memory, settings: Settings, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the backup directory should be")
    ticks = [1000.0]
    shipper = JournalShipper(memory.store, settings, [LocalDestination(blocked)],
                             clock=lambda: ticks[0])
    _add(memory, 1, "waiting")
    shipper.ship()
    assert shipper.last_error
    ticks[0] += 120.0  # whatever the wall clock does meanwhile
    shipper.ship()
    assert shipper.lag_seconds() == 120.0
    assert REGISTRY.get_sample_value("memvault_journal_lag_seconds") == 120.0
