"""Several stateless processes on one PostgreSQL store, and the leader election between them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from memvault.store import parse_filters
from memvault.store.leader import AlwaysLeader, PostgresLeaderElector, make_leader_elector
from memvault.store.postgres import PostgresStore
from tests.helpers import prepared, record, vectors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def replicas(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    yield first, second
    first.close()
    second.close()


def test_writes_of_one_replica_are_read_by_the_other(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    ident = prepared(a)
    assert b.meta().store_id == a.meta().store_id
    recs = [record(f"note {i}", user_id="alice" if i % 2 else "bob") for i in range(20)]
    vecs = vectors(20)
    a.add(recs, vecs, ident.key, "a")
    # No cache in b to go stale: its first and every later read see a's commits.
    assert b.get(recs[3].id) == recs[3]
    hit, score = b.search(vecs[5], ident.key, parse_filters({"user_id": "alice"}), 1)[0]
    assert hit.id == recs[5].id and score == pytest.approx(1.0, abs=1e-5)
    b.delete([recs[5].id], "b")
    assert a.get(recs[5].id) is None
    assert all(h.id != recs[5].id for h, _ in a.search(vecs[5], ident.key, None, 20))
    changed = recs[7].evolve(memory="edited by b", hash="h-edited")
    b.update(changed, vecs[0], ident.key, "b")
    assert a.search(vecs[0], ident.key, parse_filters({"user_id": "alice"}), 1)[0][0].id \
        == recs[7].id
    assert [e.op for e in a.history(recs[7].id)] == ["ADD", "UPDATE"]
    assert a.last_seq() == b.last_seq() == 22


def test_concurrent_writers_dedupe_and_number_the_journal_in_commit_order(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    ident = prepared(a)
    errors: list[BaseException] = []

    def write(store: PostgresStore, tag: str) -> None:
        try:
            for i in range(30):
                # "shared i" is written by both replicas: exactly one copy may survive.
                store.add([record(f"shared {i}"), record(f"{tag} {i}")],
                          vectors(2, seed=i), ident.key, tag)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, t)) for s, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert a.total() == 90
    seqs = [e.seq for e in a.journal()]
    assert seqs == list(range(1, 91))  # unique, gap-free, and visible in order
    assert a.last_seq() == 90


def test_writer_in_another_process(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    ident = prepared(store)
    child = textwrap.dedent(f"""
        from memvault.store.postgres import PostgresStore
        from tests.helpers import identity, record, vectors
        store = PostgresStore({pg_url!r})
        for i in range(25):
            store.add([record(f"child {{i}}")], vectors(1, seed=i), identity().key, "child")
        store.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT)
    for i in range(25):
        store.add([record(f"parent {i}")], vectors(1, seed=100 + i), ident.key, "parent")
    assert proc.wait(timeout=60) == 0
    assert store.total() == 50
    assert [e.seq for e in store.journal()] == list(range(1, 51))
    assert {e.actor for e in store.journal()} == {"child", "parent"}
    store.close()


def _wait_for(predicate: object, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {within}s")


def test_one_leader_and_takeover_when_its_session_dies(pg_url: str) -> None:
    first = PostgresLeaderElector(pg_url, interval=0.2)
    second = PostgresLeaderElector(pg_url, interval=0.2)
    first.start()
    second.start()
    try:
        assert first.is_leader() and not second.is_leader()
        time.sleep(0.6)
        assert first.is_leader() and not second.is_leader()
        # Cut the leader's session from the server side, as a failover or a killed backend does.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'memvault-leader' AND pid IN "
                         "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)")
        _wait_for(lambda: second.is_leader(), within=5)
        _wait_for(lambda: not first.is_leader(), within=5)
        time.sleep(0.6)  # the old leader reconnects as a standby, not as a second leader
        assert second.is_leader() and not first.is_leader()
    finally:
        first.stop()
        second.stop()


ELECTOR_CHILD = """
import sys, time
from memvault.store.leader import PostgresLeaderElector
elector = PostgresLeaderElector(sys.argv[1], interval=0.2)
elector.start()
while True:
    print("leader" if elector.is_leader() else "standby", flush=True)
    time.sleep(0.05)
"""


class _Child:
    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ELECTOR_CHILD, url], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True)
        self.last = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.last = line.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def test_standby_process_takes_over_when_the_leader_is_killed(pg_url: str) -> None:
    leader = _Child(pg_url)
    standby: _Child | None = None
    try:
        _wait_for(lambda: leader.last == "leader", within=20)
        standby = _Child(pg_url)
        _wait_for(lambda: standby is not None and standby.last == "standby", within=20)
        time.sleep(0.5)
        assert leader.last == "leader" and standby.last == "standby"
        leader.kill()
        took = _wait_for(lambda: standby is not None and standby.last == "leader", within=5)
        assert took < 5
    finally:
        leader.kill()
        if standby is not None:
            standby.kill()


def test_sqlite_elector_always_leads(settings: object, backend: str) -> None:
    elector = make_leader_elector(settings)  # type: ignore[arg-type]
    if backend == "sqlite":
        assert isinstance(elector, AlwaysLeader) and elector.is_leader()
    else:
        assert isinstance(elector, PostgresLeaderElector)
        elector.start()
        try:
            assert elector.is_leader()
        finally:
            elector.stop()
        assert not elector.is_leader()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_path: Path, name: str, url: str, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMVAULT_")}
    env.update(MEMVAULT_DATA_DIR=str(tmp_path / name), MEMVAULT_DATABASE_URL=url,
               MEMVAULT_ADMIN_API_KEY="replica-admin-key")
    return subprocess.Popen(
        [sys.executable, "-m", "memvault", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_serve_processes_share_one_database(pg_url: str, tmp_path: Path) -> None:
    import httpx

    ports = [_free_port(), _free_port()]
    procs = [_serve(tmp_path, f"r{i}", pg_url, port) for i, port in enumerate(ports)]
    headers = {"X-API-Key": "replica-admin-key"}
    try:
        for proc, port in zip(procs, ports, strict=True):
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()[0]
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "replica did not start"
                time.sleep(0.1)
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        added = httpx.post(f"{a}/memories", headers=headers, timeout=30, json={
            "messages": [{"role": "user", "content": "Replicas share one brain"}],
            "user_id": "alice", "infer": False})
        assert added.status_code == 200, added.text
        memory_id = added.json()["results"][0]["id"]
        seen = httpx.get(f"{b}/memories/{memory_id}", headers=headers, timeout=10)
        assert seen.status_code == 200 and seen.json()["memory"] == "Replicas share one brain"
        found = httpx.post(f"{b}/search", headers=headers, timeout=30,
                           json={"query": "shared brain", "user_id": "alice"})
        assert found.json()["results"][0]["id"] == memory_id
        changed = httpx.put(f"{b}/memories/{memory_id}", headers=headers, timeout=30,
                            json={"text": "Replicas share one database"})
        assert changed.status_code == 200, changed.text
        history = httpx.get(f"{a}/memories/{memory_id}/history", headers=headers, timeout=10)
        assert [h["event"] for h in history.json()] == ["ADD", "UPDATE"]
        assert httpx.delete(f"{a}/memories/{memory_id}", headers=headers,
                            timeout=10).status_code == 200
        assert httpx.get(f"{b}/memories/{memory_id}", headers=headers,
                         timeout=10).status_code == 404
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def test_serve_on_a_missing_database_exits_naming_it(pg_server: object, tmp_path: Path) -> None:
    url = pg_server.get_uri("replica_db_that_is_missing")  # type: ignore[attr-defined]
    proc = _serve(tmp_path, "missing", url, _free_port())
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "replica_db_that_is_missing" in output
    assert "createdb" in output
