"""An acknowledged write survives kill -9 of the process that made it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from memvault.config import load_settings
from memvault.store import open_store

WRITER = textwrap.dedent("""
    import sys
    from memvault.config import load_settings
    from memvault.memory import Memory

    memory = Memory(load_settings({"database_url": sys.argv[1], "data_dir": sys.argv[2]}))
    i = 0
    while True:
        # Batches of 1..4 so the kill can land inside a multi-row transaction too.
        batch = [{"role": "user", "content": f"fact {i + k} " + "x" * (k * 50)}
                 for k in range(1 + i % 4)]
        result = memory.add(batch, user_id="alice", infer=False)
        for item in result["results"]:
            print(item["id"], flush=True)   # acknowledged: add() has returned
        i += len(batch)
""")


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    acknowledged: list[str] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(acknowledged) >= 150, proc.stderr.read() if proc.stderr else ""

    store = open_store(load_settings({"database_url": url, "data_dir": tmp_path / "data"}))
    try:
        missing = [i for i in acknowledged if store.get(i) is None]
        assert missing == []
        # Every stored memory has its journal entry and vector: no half-written rows.
        journal_ids = {e.memory_id for e in store.journal(limit=100_000)}
        stored = store.list(None)
        assert {r.id for r in stored} == journal_ids
        assert sum(store.vector_counts().values()) == len(stored)
    finally:
        store.close()
