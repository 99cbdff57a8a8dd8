"""The servers the console tests look at: a real `memvault serve` (subprocess, admin key,
backups) over a store seeded with the incident's shape (namespaces filled, one of them wiped),
and a guarded server whose store was swapped for an empty one (refused)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from memvault.backup.snapshot import create_backup
from memvault.config import Settings, load_settings
from memvault.embed.local import LocalEmbedder
from memvault.guard.api import Guard
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.keys import create_key
from tests.peers.live_server import LiveServer

ADMIN_KEY = "console-test-admin-key"
ALICE = ["Alice goes hiking in the Alps every August", "Alice is allergic to peanuts",
         "Alice prefers tea over coffee", "Alice works as a radiologist in Lyon",
         "Alice's daughter is called Maya", "Alice plays the cello on Sundays"]
BOB = ["Bob drives an electric van", "Bob's favourite film is Alien",
       "Bob is learning Portuguese"]
CAROL = [f"Carol's note number {i} about the garden" for i in range(24)]


@dataclass
class Served:
    url: str
    settings: Settings
    bob_token: str
    alice_ids: dict[str, str]  # text -> id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(settings: Settings, embedder: LocalEmbedder) -> tuple[str, dict[str, str]]:
    """Alice and Bob's memories, Carol's added and then all deleted (the drop), one valid
    backup, and a key scoped to Bob. Returns Bob's token and Alice's ids."""
    with Memory(settings, embedder=embedder) as memory:
        ids = {}
        for text in ALICE:
            ids[text] = memory.add(text, user_id="alice", infer=False)["results"][0]["id"]
        for text in BOB:
            memory.add(text, user_id="bob", agent_id="van/assistant", infer=False)
        time.sleep(1.1)  # the chart's step is one second: the drop gets its own points
        for text in CAROL:
            memory.add(text, user_id="carol", infer=False)
        time.sleep(1.1)
        memory.delete_all(user_id="carol")
        results = create_backup(memory.store, settings)
        assert [r.status for r in results] == ["valid"], results
        _, token = create_key(memory.store, user_id="bob", label="bob's agent")
    return token, ids


@contextmanager
def memvault_serve(data_dir: Path, embedder: LocalEmbedder) -> Iterator[Served]:
    port = free_port()
    env = {**os.environ, "MEMVAULT_DATA_DIR": str(data_dir),
           "MEMVAULT_DATABASE_URL": f"sqlite:///{data_dir / 'memvault.db'}",
           "MEMVAULT_BACKUP_URLS": str(data_dir / "backups"),
           "MEMVAULT_ADMIN_API_KEY": ADMIN_KEY, "MEMVAULT_HOST": "127.0.0.1",
           "MEMVAULT_PORT": str(port)}
    settings = load_settings({"data_dir": data_dir, "database_url": env["MEMVAULT_DATABASE_URL"],
                              "backup_urls": env["MEMVAULT_BACKUP_URLS"]})
    token, ids = seed(settings, embedder)
    log = (data_dir / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "memvault", "serve"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("memvault serve did not start:\n"
                                   + (data_dir / "serve.log").read_text()[-4000:])
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield Served(url, settings, token, ids)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def refused_server(data_dir: Path, embedder: LocalEmbedder) -> Iterator[str]:
    """Open mode on loopback; the store was replaced by an empty one where the ledger knows
    memories, auto-restore off: the guard refuses the store (StoreEmpty)."""
    original = load_settings({"data_dir": data_dir,
                              "database_url": f"sqlite:///{data_dir / 'first.db'}"})
    with Memory(original, embedder=embedder) as memory:
        memory.add("something worth keeping", user_id="alice", infer=False)
        create_backup(memory.store, original)
        guard = Guard(original, memory)
        guard.start()  # writes the ledger the next store is compared with
        guard.stop()
    recreated = load_settings({"data_dir": data_dir, "auto_restore": "never",
                               "database_url": f"sqlite:///{data_dir / 'recreated.db'}"})
    with Memory(recreated, embedder=embedder) as fresh:
        guard = Guard(recreated, fresh)
        guard.tick_seconds = 3600
        guard.start()
        try:
            with LiveServer(app_over(recreated, fresh, guard=guard)) as server:
                yield server.url
        finally:
            guard.stop()
