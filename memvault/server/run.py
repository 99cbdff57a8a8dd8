"""`memvault serve`: settings, the bind-address rule, the app, uvicorn."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from memvault.config import load_settings
from memvault.errors import ConfigError, MemvaultError
from memvault.server.loopback import is_loopback

log = logging.getLogger("memvault.server")


def check_bind(host: str, admin_key_set: bool) -> None:
    """Open access is only acceptable on loopback (mem0's default); refuse anything wider."""
    if admin_key_set:
        return
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without an admin API key: anyone who can reach "
            "it could read and delete every memory",
            hint="set MEMVAULT_ADMIN_API_KEY (e.g. `openssl rand -hex 32`), or listen on "
            "127.0.0.1",
        )
    log.warning("no MEMVAULT_ADMIN_API_KEY set: the API on %s is open to every local "
                "process (loopback only)", host)


def limit_blas_threads() -> None:
    """One BLAS thread per call. The server already runs requests in parallel; OpenBLAS's own
    threads spin between calls and, under concurrent requests, cost 15x the CPU of a 10k-vector
    scan (bench/bench_server.py)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def run_server(flags: dict[str, Any]) -> None:
    import uvicorn

    from memvault.runtime import Runtime
    from memvault.server.app import create_app

    settings = load_settings(flags)
    check_bind(settings.host, settings.admin_api_key is not None)
    limit_blas_threads()
    runtime = Runtime(settings)  # the writer lock is taken here, before anything listens
    try:
        # Load the model and check it against the store now, not on the first request;
        # a mismatch does not stop the server: /readyz reports it (503).
        runtime.memory.embedder_identity()
    except MemvaultError as exc:
        log.error("embedder check failed at startup: %s", exc)
    app = create_app(runtime)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it shut down on once it is done; for memvault a SIGTERM
    # (systemd, docker stop) after a graceful shutdown is a clean exit: 0, not death by signal.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if in_main else None
    try:
        server.run()
    except SystemExit:  # uvicorn exits the process when it cannot bind; we report instead
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        runtime.close()
    if not server.started:
        raise MemvaultError(
            f"could not listen on {settings.host}:{settings.port}",
            hint="see the error above; is another process using the port? set --port or "
            "MEMVAULT_PORT",
        )
