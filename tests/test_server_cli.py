"""`memvault serve` as a real process: it answers on 127.0.0.1, stops cleanly on SIGTERM,
and fails loudly (exit 1, naming the address) when it cannot listen."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MEMVAULT_")}
    environment.update({"MEMVAULT_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.Popen(
        [sys.executable, "-m", "memvault", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def server(tmp_path: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    process = serve(tmp_path, port, MEMVAULT_ADMIN_API_KEY="serve-test-admin-key")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_serve_answers_and_stops_cleanly(server: subprocess.Popen[str], port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": "serve-test-admin-key"}
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    added = httpx.post(f"{url}/memories", headers=headers, timeout=30, json={
        "messages": [{"role": "user", "content": "served for real"}], "user_id": "u"})
    assert added.status_code == 200 and added.headers["x-request-id"]
    assert httpx.get(f"{url}/memories", timeout=10).status_code == 401
    server.send_signal(signal.SIGTERM)
    output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "serve-test-admin-key" not in output  # the key never reaches the log


def test_serve_on_a_busy_port_fails_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve(tmp_path, port)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"127.0.0.1:{port}" in output
