"""Forks: two stores on one backup destination, two writers on one store.

A fresh staging store pointed at a live prod's destination must never restore prod's data
(DestinationShared); a new empty store where prod is gone restores prod's lineage; a copied
store writing the same lineage is a WriterConflict; a second `serve` on one SQLite file exits
naming the first's pid."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from memvault.backup.destinations import LocalDestination
from memvault.backup.head import LineageHead, new_process_id, write_head
from memvault.backup.scheduler import BackupScheduler
from memvault.backup.shipper import JournalShipper
from memvault.backup.snapshot import create_backup
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.guard.api import LEDGER_REREAD_SECONDS, Guard, guard_check
from memvault.guard.clock import Clock
from memvault.guard.ledger import read_ledger
from memvault.memory import Memory
from tests.test_guard import other_database, running, wait_for
from tests.test_server_cli import free_port, serve


class FakeMono:
    """A monotonic clock the test moves (liveness is decided over time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Heart:
    """What a writer's journal shipper leaves in the destination every cycle: its head."""

    def __init__(self, dest: LocalDestination, store: Any, host: str = "prod-host",
                 pid: int = 4242) -> None:
        meta = store.meta()
        self.dest = dest
        self.head = LineageHead(lineage_id=meta.lineage_id, store_id=meta.store_id,
                                process=new_process_id(), beat=0,
                                journal_upto=store.last_seq(), journal_tip_sha256=None,
                                memories=store.total(), written_at="2026-11-29T00:00:00+00:00",
                                host=host, pid=pid)

    def beat(self, stopped: bool = False) -> None:
        self.head.beat += 1
        self.head.stopped = stopped
        write_head(self.dest, self.head)


def fill(memory: Memory, user: str = "alice", n: int = 6) -> dict[str, int]:
    memory.add([{"role": "user", "content": f"{user} prod fact {i}"} for i in range(n)],
               user_id=user, infer=False)
    return memory.store.counts()


def shared_settings(settings: Settings, database_url: str, **more: Any) -> Settings:
    """Another store writing to the same destination (`<data_dir>/backups`)."""
    return load_settings({"data_dir": settings.data_dir, "database_url": database_url,
                          "journal_interval": 1.0, **more})


def firing(guard: Guard) -> set[str]:
    return {f.alert for f in guard.verdict.firing()} if guard.verdict else set()


def test_staging_on_a_live_prods_destination_never_restores_it(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    fill(memory)
    assert all(r.status == "valid" for r in create_backup(memory.store, settings))
    dest = LocalDestination(settings.data_dir / "backups")
    with running(Guard(settings, memory)):
        pass  # prod's ledger
    prod = Heart(dest, memory.store)
    prod.beat()
    staging = shared_settings(settings, other_database(backend, tmp_path, request))
    mono = FakeMono()
    with Memory(staging, embedder=local_embedder) as fresh, \
            running(Guard(staging, fresh, clock=Clock(mono=mono))) as guard:
        assert guard.known is not None and guard.known.pending  # one read: cannot tell yet
        assert guard_check(guard)["code"] == "guard_deciding"
        prod.beat()  # prod's shipper writes its head again: alive
        mono.now += 1
        verdict = guard.check()
        assert "DestinationShared" in firing(guard), [f.summary for f in verdict.firing()]
        assert not {"StoreEmpty", "StoreReplaced"} & firing(guard)
        shared = next(f for f in verdict.firing() if f.alert == "DestinationShared")
        assert memory.store.meta().lineage_id in shared.summary and "pid 4242" in shared.summary
        assert fresh.store.total() == 0 and not guard.restore  # never restored prod's data
        assert guard_check(guard)["ok"] is True  # a warning, not a refusal
        assert "DestinationShared" in " ".join(guard_check(guard)["warnings"])
        # Staging starts its own lineage; prod's records are untouched.
        own = fresh.store.meta().lineage_id
        assert dest.list(f"lineages/{own}/ledger/")
        staging_heart = Heart(dest, fresh.store, host="staging-host", pid=777)
        staging_heart.beat()
    with running(Guard(settings, memory, clock=Clock(mono=mono))) as prod_guard:
        assert not firing(prod_guard)  # staging's head has not moved yet: not known live
        staging_heart.beat()
        mono.now += LEDGER_REREAD_SECONDS + 1  # the guard re-reads the destinations each minute
        prod_guard.check()
        # Prod sees staging alive in its destination: a warning; prod keeps serving its own.
        assert firing(prod_guard) == {"DestinationShared"}
        assert "pid 777" in next(f.summary for f in prod_guard.verdict.firing())
        assert guard_check(prod_guard)["ok"] is True


def test_a_new_empty_store_restores_the_gone_prods_lineage_only_after_deciding(
    backend: str, settings: Settings, memory: Memory, local_embedder: LocalEmbedder,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    before = fill(memory)
    assert all(r.status == "valid" for r in create_backup(memory.store, settings))
    dest = LocalDestination(settings.data_dir / "backups")
    with running(Guard(settings, memory)):
        pass
    Heart(dest, memory.store).beat()  # prod was killed: its head never moves again
    replacement = shared_settings(settings, other_database(backend, tmp_path, request))
    mono = FakeMono()
    with Memory(replacement, embedder=local_embedder) as fresh, \
            running(Guard(replacement, fresh, clock=Clock(mono=mono))) as guard:
        assert guard.known is not None and guard.known.pending
        assert fresh.store.total() == 0 and not guard.restore
        mono.now += guard.watch.decide_after + 1  # the head did not move: prod is gone
        guard.check()
        wait_for(lambda: guard.restore and guard.verdict and not guard.verdict.firing())
        assert guard.restore["ok"] is True and fresh.store.counts() == before
        lineage = fresh.store.meta().lineage_id
        assert lineage == memory.store.meta().lineage_id
        record, _ = read_ledger([dest], lineage)  # the ledger accepted this restore, by id
        assert record is not None and len(record.restores) == 1


def test_several_gone_lineages_are_named_and_none_is_restored(
    settings: Settings, memory: Memory, local_embedder: LocalEmbedder, tmp_path: Path,
) -> None:
    fill(memory)
    create_backup(memory.store, settings)
    second = shared_settings(settings, f"sqlite:///{tmp_path / 'two' / 'm.db'}")
    with Memory(second, embedder=local_embedder) as other:
        fill(other, "bob")
        create_backup(other.store, second)
        with running(Guard(second, other)):
            pass
        other_lineage = other.store.meta().lineage_id
    with running(Guard(settings, memory)):
        pass
    third = shared_settings(settings, f"sqlite:///{tmp_path / 'three' / 'm.db'}")
    with Memory(third, embedder=local_embedder) as fresh, \
            running(Guard(third, fresh)) as guard:
        empty = next(f for f in guard.verdict.firing() if f.alert == "StoreEmpty")
        assert other_lineage in empty.summary
        assert memory.store.meta().lineage_id in empty.summary
        assert guard.restore_lineage() is None and not guard.restore
        assert fresh.store.total() == 0


@pytest.fixture
def sqlite_memory(tmp_path: Path, local_embedder: LocalEmbedder) -> Any:
    settings = load_settings({"data_dir": tmp_path / "data",
                              "database_url": f"sqlite:///{tmp_path / 'store' / 'memvault.db'}"})
    with Memory(settings, embedder=local_embedder) as memory:
        yield settings, memory


def test_a_copied_store_writing_the_same_lineage_is_a_writer_conflict(
    sqlite_memory: Any, local_embedder: LocalEmbedder, tmp_path: Path,
) -> None:
    settings, memory = sqlite_memory
    fill(memory, n=4)
    dest = LocalDestination(settings.data_dir / "backups")
    assert JournalShipper(memory.store, settings, [dest]).ship() == 1
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    copy = tmp_path / "copy" / "memvault.db"
    copy.parent.mkdir()
    with sqlite3.connect(path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)  # what `cp` of a quiet store gives: the same store id and lineage
    fill(memory, "carol", 3)  # the original goes on and ships
    assert JournalShipper(memory.store, settings, [dest]).ship() == 1
    copied = load_settings({"data_dir": tmp_path / "copydata", "database_url":
                            f"sqlite:///{copy}", "backup_urls": str(dest.root)})
    with Memory(copied, embedder=local_embedder) as twin:
        assert twin.store.meta().lineage_id == memory.store.meta().lineage_id
        fill(twin, "mallory", 2)  # the copy writes the same seqs with other entries
        # As `serve` wires them (memvault/runtime.py): this process ships.
        holds: list[Guard] = []
        scheduler = BackupScheduler(twin.store, copied, destinations=[dest],
                                    hold=lambda: holds[0].backup_hold())
        guard = Guard(copied, twin, scheduler=scheduler)
        holds.append(guard)
        verdict = guard.check(restore=False)
        conflict = next(f for f in verdict.firing() if f.alert == "WriterConflict")
        assert "holds seq 5" in conflict.summary and "mallory" not in conflict.summary
        assert "WriterConflict" in (scheduler.held() or "")  # no shipping into the fork


def test_a_second_serve_on_one_sqlite_store_exits_naming_the_first(tmp_path: Path) -> None:
    first_port, second_port = free_port(), free_port()
    first = serve(tmp_path, first_port)
    try:
        wait_for(lambda: _answers(first_port, first), timeout=90)
        second = serve(tmp_path, second_port)
        output, _ = second.communicate(timeout=90)
        assert second.returncode != 0, output
        assert f"pid {first.pid}" in output and "one writer process" in output
        created = subprocess.run(
            [*first.args[:3], "backup", "create"], env=_env(tmp_path), capture_output=True,
            text=True, timeout=90)
        assert created.returncode == 1, created.stdout + created.stderr
        assert f"pid {first.pid}" in created.stderr and "POST /backups" in created.stderr
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert first.returncode == 0


def _answers(port: int, process: subprocess.Popen[str]) -> bool:
    assert process.poll() is None, process.communicate()[0]
    try:
        return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMVAULT_")}
    return {**env, "MEMVAULT_DATA_DIR": str(tmp_path / "data")}




def test_status_without_a_server_does_not_take_a_live_looking_lineage_for_gone(
    settings: Settings, memory: Memory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from typer.testing import CliRunner

    from memvault.cli import app

    fill(memory)
    create_backup(memory.store, settings)
    with running(Guard(settings, memory)):
        pass
    Heart(LocalDestination(settings.data_dir / "backups"), memory.store).beat()
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", f"sqlite:///{tmp_path / 'staging' / 'm.db'}")
    out = CliRunner().invoke(app, ["status", "--json"])
    report = json.loads(out.stdout)
    assert out.exit_code == 1, out.stdout  # a warning: one look cannot tell live from gone
    assert report["guard"]["firing"] == [] and report["guard"]["deciding"]
    assert any("not decided from one look" in c["message"] for c in report["checks"])
