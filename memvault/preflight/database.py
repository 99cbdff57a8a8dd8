"""A candidate database looked at read-only: reachable? a memvault store? which one, holding
what? Never `open_store`, which creates, migrates and records the connection: a preflight
changes nothing (SQLite: `mode=ro`, no WAL files made; PostgreSQL: a read-only session)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memvault.config.fingerprint import database_identity
from memvault.config.redact import redact_url
from memvault.guard.checks import Observation
from memvault.store import MetaKey

NEW_STORE = "(new)"  # the identity an absent schema will get at the next start


@dataclass
class DatabaseProbe:
    url: str  # redacted
    target: str  # where it points: host, port, database, user (never the password)
    reachable: bool = False
    error: str | None = None
    schema: bool = False  # a memvault store is there
    meta: dict[str, Any] = field(default_factory=dict)
    namespaces: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    # The ids a new store would get: a fresh lineage, unknown to every destination.
    new_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def total(self) -> int:
        return sum(self.namespaces.values())

    @property
    def store_id(self) -> str:
        return str(self.meta.get(MetaKey.STORE_ID, NEW_STORE))

    @property
    def lineage_id(self) -> str:
        return str(self.meta.get(MetaKey.LINEAGE_ID, NEW_STORE))

    @property
    def active_embedder(self) -> str | None:
        value = self.meta.get(MetaKey.ACTIVE_EMBEDDER)
        return str(value) if value else None

    def observation(self, backend: str) -> Observation:
        """What the guard would observe at the next start (a new empty store when absent)."""
        return Observation(
            store_id=str(self.meta.get(MetaKey.STORE_ID, self.new_id)),
            lineage_id=str(self.meta.get(MetaKey.LINEAGE_ID, self.new_id)), backend=backend,
            location=self.target, active_embedder=self.active_embedder, seq=self.seq,
            namespaces=dict(self.namespaces),
            restored_from=self.meta.get(MetaKey.RESTORED_FROM),
            restore_incomplete=self.meta.get(MetaKey.RESTORE_INCOMPLETE))

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "target": self.target, "reachable": self.reachable,
                "error": self.error, "schema": self.schema, "store_id": self.store_id,
                "lineage_id": self.lineage_id, "active_embedder": self.active_embedder,
                "seq": self.seq, "memories": self.total, "namespaces": self.namespaces}


def probe_database(url: str, timeout: float) -> DatabaseProbe:
    identity = database_identity(url)
    if identity.backend == "sqlite":
        probe = DatabaseProbe(redact_url(url), f"file {identity.database}")
        _probe_sqlite(Path(identity.database), probe)
    else:
        probe = DatabaseProbe(redact_url(url), f"host={identity.host} port={identity.port} "
                              f"database={identity.database} user={identity.user or '(default)'}"
                              " (password redacted)")
        _probe_postgres(url, timeout, probe)
    return probe


def _probe_sqlite(path: Path, probe: DatabaseProbe) -> None:
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        probe.reachable = parent is not None and parent.is_dir()
        probe.error = None if probe.reachable else f"no folder to create {path} in"
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error as exc:
        probe.error = f"cannot open {path} read-only: {exc}"
        return
    try:
        probe.reachable = True
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "memories", "journal"} <= tables:
            return
        probe.schema = True
        probe.meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        probe.namespaces = dict(conn.execute(
            "SELECT namespace, count(*) FROM memories GROUP BY namespace ORDER BY namespace"))
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
        probe.seq = int(row[0]) if row else 0
    except sqlite3.Error as exc:
        probe.error = f"{path} cannot be read as a memvault store: {exc}"
    finally:
        conn.close()


def _probe_postgres(url: str, timeout: float, probe: DatabaseProbe) -> None:
    import psycopg

    from memvault.store.postgres.connections import PostgresTarget, connect_kwargs
    from memvault.store.postgres.schema import SCHEMA

    target = PostgresTarget(url)
    try:
        conn = psycopg.connect(url, **connect_kwargs(timeout))
    except psycopg.Error as exc:
        probe.error = target.scrub(str(exc).strip() or type(exc).__name__)
        return
    try:
        probe.reachable = True
        conn.read_only = True
        conn.autocommit = False
        found = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.meta",)).fetchone()
        if not found or found[0] is None:
            return
        probe.schema = True
        probe.meta = dict(conn.execute(f"SELECT key, value FROM {SCHEMA}.meta").fetchall())
        probe.namespaces = {ns: int(n) for ns, n in conn.execute(
            f"SELECT namespace, count(*) FROM {SCHEMA}.memories GROUP BY namespace "
            "ORDER BY namespace").fetchall()}
        row = conn.execute(f"SELECT seq FROM {SCHEMA}.journal_counter").fetchone()
        probe.seq = int(row[0]) if row else 0
    except psycopg.Error as exc:
        probe.error = target.scrub(f"cannot read the memvault schema: {str(exc).strip()}")
    finally:
        conn.rollback()
        conn.close()
