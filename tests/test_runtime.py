"""The composition root (memvault/runtime.py): one elector for every job, the guard's hold on
the scheduler, the start order and what a failed start or a close leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.runtime import Runtime
from memvault.store.writer_lock import WriterLockHeld


def test_every_job_shares_one_elector_and_backups_wait_for_the_guard(
    settings: Settings, memory: Memory,
) -> None:
    runtime = Runtime(settings, memory)
    try:
        assert runtime.guard is not None and runtime.scheduler is not None
        assert runtime.drill is not None and runtime.elector is not None
        assert runtime.guard.elector is runtime.elector
        assert runtime.scheduler.is_leader == runtime.elector.is_leader
        assert runtime.drill.guard is runtime.guard and runtime.guard.drill is runtime.drill
        assert runtime.guard.scheduler is runtime.scheduler
        # Built, not started: no scheduled backup before the guard's first check.
        assert runtime.scheduler.held() == "the guard has not checked the store yet"
        runtime.start()
        assert runtime.guard.verdict is not None and runtime.scheduler.held() is None
    finally:
        runtime.close()
    assert not runtime.scheduler.status()["running"]


def test_a_failing_start_stops_what_had_started(
    settings: Settings, memory: Memory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = Runtime(settings, memory)
    assert runtime.scheduler is not None and runtime.guard is not None
    stopped: list[str] = []
    monkeypatch.setattr(runtime.scheduler, "start", lambda: (_ for _ in ()).throw(
        RuntimeError("no thread for you")))
    real_stop = runtime.guard.stop
    monkeypatch.setattr(runtime.guard, "stop", lambda: (stopped.append("guard"), real_stop()))
    try:
        with pytest.raises(RuntimeError, match="no thread for you"):
            runtime.start()
        assert stopped == ["guard"]  # the guard had started: stopped again, nothing left running
    finally:
        runtime.close()


def test_the_writer_lock_is_taken_when_built_and_released_by_close(
    tmp_path: Path, local_embedder: LocalEmbedder,
) -> None:
    settings = load_settings({"data_dir": tmp_path / "d",
                              "database_url": f"sqlite:///{tmp_path / 'd' / 'mv.db'}"})
    with Memory(settings, embedder=local_embedder) as first_memory, \
            Memory(settings, embedder=local_embedder) as second_memory:
        first = Runtime(settings, first_memory)
        with pytest.raises(WriterLockHeld):
            Runtime(settings, second_memory)  # a second `serve` on the file: refused at once
        first.close()
        second = Runtime(settings, second_memory)
        second.close()
