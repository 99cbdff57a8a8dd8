"""A wall clock that ran ahead (+400 days, then corrected) must hide nothing: ledger and drill
records are ordered by seq, ages never come from a future stamp, and a stamp ahead of this
clock is a ClockSkew finding naming both times. The guard's clocks are injected."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memvault.backup.destinations import LocalDestination
from memvault.backup.scheduler import BackupScheduler
from memvault.backup.snapshot import create_backup
from memvault.cli import app
from memvault.config import Settings, load_settings
from memvault.guard.api import Guard
from memvault.guard.checks import Observation
from memvault.guard.clock import Clock
from memvault.guard.drill import METRIC
from memvault.guard.drill_job import DrillJob
from memvault.guard.ledger import observe, read_ledger, write_ledger
from memvault.memory import Memory
from tests.test_guard import running

AHEAD = timedelta(days=400)


def record_at(memory: Memory, seq: int, when: datetime, memories: int = 1) -> Any:
    meta = memory.store.meta()
    return observe(None, lineage_id=meta.lineage_id, store_id=meta.store_id,
                   backend=meta.backend, location=meta.location,
                   active_embedder=meta.active_embedder, seq=seq,
                   namespaces={"user:alice": memories}, now=when)


def test_future_named_ledger_records_never_hide_or_prune_later_ones(
    settings: Settings, memory: Memory,
) -> None:
    dest = LocalDestination(settings.data_dir / "backups")
    now = datetime.now(UTC)
    for seq in range(1, 21):  # 20 records written while the clock was 400 days ahead
        assert write_ledger([dest], record_at(memory, seq, now + AHEAD)) == []
    latest = record_at(memory, 21, now)  # the clock is corrected
    assert write_ledger([dest], latest) == []
    lineage = memory.store.meta().lineage_id
    keys = dest.list(f"lineages/{lineage}/ledger/")
    assert len(keys) == 20 and keys[-1].startswith(f"lineages/{lineage}/ledger/0000000000000021-")
    known, problems = read_ledger([dest], lineage)
    assert problems == [] and known is not None
    assert (known.seq, known.observed_at) == (21, latest.observed_at)


def test_a_count_drop_follows_the_newest_record_by_seq_not_the_clock(
    settings: Settings, memory: Memory,
) -> None:
    """A peak recorded with the clock ahead keeps MemoryCountDrop firing while the count is
    down (records after it are not hidden), and ages out a day after the correction (not 400
    days later)."""
    from memvault.guard.checks import assess
    from memvault.guard.ledger import LedgerRecord

    dest = LocalDestination(settings.data_dir / "backups")
    lineage = memory.store.meta().lineage_id
    now = datetime.now(UTC)
    peak = record_at(memory, 50, now + AHEAD, memories=100)
    write_ledger([dest], peak)
    meta = memory.store.meta()
    down = observe(peak, lineage_id=lineage, store_id=meta.store_id, backend=meta.backend,
                   location=meta.location, active_embedder=None, seq=60,
                   namespaces={"user:alice": 10}, now=now)
    write_ledger([dest], down)
    known, _ = read_ledger([dest], lineage)
    assert known is not None and (known.seq, known.memories) == (60, 10)

    def drop(record: LedgerRecord, at: datetime) -> bool:
        obs = Observation(store_id=meta.store_id, lineage_id=lineage, backend=meta.backend,
                          location=meta.location, active_embedder=None, seq=61,
                          namespaces={"user:alice": 10})
        return "MemoryCountDrop" in {f.alert for f in assess(obs, record, None, 0.5,
                                                              at).firing()}

    assert drop(known, now)  # still down: still firing
    later = observe(known, lineage_id=lineage, store_id=meta.store_id, backend=meta.backend,
                    location=meta.location, active_embedder=None, seq=61,
                    namespaces={"user:alice": 10}, now=now + timedelta(hours=25))
    assert not drop(later, now + timedelta(hours=25))  # aged out a day after the correction


def test_adopt_takes_effect_after_future_named_records(
    settings: Settings, memory: Memory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory.add("the store as it is now", user_id="alice", infer=False)
    dest = LocalDestination(settings.data_dir / "backups")
    # The lineage reached seq 50 while the clock ran ahead; this store is behind: rolled back.
    write_ledger([dest], record_at(memory, 50, datetime.now(UTC) + AHEAD, memories=30))
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", str(settings.database_url))
    runner = CliRunner()
    before = runner.invoke(app, ["status", "--json"])
    assert "StoreReplaced" in json.loads(before.stdout)["guard"]["firing"], before.stdout
    adopted = runner.invoke(app, ["adopt", "--yes", "--json"])
    assert adopted.exit_code == 0, adopted.stdout + adopted.stderr
    after = runner.invoke(app, ["status", "--json"])
    assert json.loads(after.stdout)["guard"]["firing"] == [], after.stdout


def test_a_later_failing_drill_fires_despite_a_future_stamped_success(
    settings: Settings, memory: Memory,
) -> None:
    memory.add("drilled", user_id="alice", infer=False)
    dest = LocalDestination(settings.data_dir / "backups")
    lineage = memory.store.meta().lineage_id
    now = datetime.now(UTC)
    ahead = (now + AHEAD).strftime("%Y%m%dT%H%M%S%fZ")
    success = {"ok": True, "finished_at": (now + AHEAD).isoformat(), "started_at": "",
               "journal": {"upto_seq": 3}}
    dest.put_bytes(f"lineages/{lineage}/drills/0000000000000003-0000{ahead}.json",
                   json.dumps(success).encode())
    failure = {"ok": False, "finished_at": now.isoformat(), "error": "vectors damaged",
               "journal": {"upto_seq": 4}, "restored": {"id": "b-4"}}
    dest.put_bytes(f"lineages/{lineage}/drills/0000000000000004-0000"
                   f"{now.strftime('%Y%m%dT%H%M%S%fZ')}.json", json.dumps(failure).encode())
    with running(Guard(settings, memory)) as guard:
        job = DrillJob(settings, memory, guard)
        job.refresh()
        assert job.newest is not None and job.newest["ok"] is False
        assert "DrillFailed" in guard.alerts.firing()
        gauge = guard.registry.get_sample_value(METRIC)
        assert gauge is not None and gauge <= datetime.now(UTC).timestamp() + 1  # never 2028
        assert job.seconds_until_due() <= 3600  # the failure is retried, not in 400 days


class Ahead:
    """`datetime` for the snapshot module with its clock 400 days ahead."""

    @staticmethod
    def now(tz: Any = None) -> datetime:
        return datetime.now(tz) + AHEAD


def test_a_future_stamped_backup_is_due_now_stale_and_a_clock_skew(
    settings: Settings, memory: Memory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import memvault.backup.snapshot as snapshot

    memory.add("backed up with the clock ahead", user_id="alice", infer=False)
    with monkeypatch.context() as ahead:
        ahead.setattr(snapshot, "datetime", Ahead)
        assert all(r.status == "valid" for r in create_backup(memory.store, settings))
    scheduler = BackupScheduler(memory.store, settings)
    assert scheduler.seconds_until_snapshot() == 0.0  # not "due in 400 days"
    ticks = [0.0]
    alerting = load_settings({"data_dir": settings.data_dir, "database_url":
                              settings.database_url, "backup_interval": 3600})
    with running(Guard(alerting, memory, scheduler=scheduler,
                       clock=Clock(mono=lambda: ticks[0]))) as guard:
        ticks[0] += 2 * 3600 + 900  # up two intervals, no valid backup taken meanwhile
        verdict = guard.check()
        names = {f.alert for f in verdict.firing()}
        assert {"BackupStale", "ClockSkew"} <= names, [f.summary for f in verdict.firing()]
        skew = next(f for f in verdict.firing() if f.alert == "ClockSkew")
        assert str((datetime.now(UTC) + AHEAD).year) in skew.summary
        assert "this clock says" in skew.summary
        assert guard.registry.get_sample_value("memvault_alerts_firing",
                                               {"alert": "ClockSkew"}) == 1


def test_a_failing_backup_run_fires_backup_failing_at_once(
    settings: Settings, memory: Memory, tmp_path: Path,
) -> None:
    memory.add("to back up", user_id="alice", infer=False)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the destination should be")
    good = settings.data_dir / "backups"
    broken = load_settings({"data_dir": settings.data_dir, "database_url":
                            settings.database_url, "backup_urls": f"{good},{blocked}"})
    scheduler = BackupScheduler(memory.store, broken)
    with running(Guard(broken, memory, scheduler=scheduler)) as guard:
        scheduler.snapshot_now()
        assert scheduler.failing
        firing = {f.alert: f for f in guard.check().firing()}
        assert "BackupFailing" in firing and str(blocked) in firing["BackupFailing"].summary
        from memvault.guard.api import guard_check

        check = guard_check(guard)
        assert check["ok"] is True and any("BackupFailing" in w for w in check["warnings"])
