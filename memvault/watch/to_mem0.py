"""`memvault restore [ID|latest] --to-mem0 DSN`: a backup of a watched mem0 (or any memvault
backup) written back into mem0's own table layout, so that mem0, unchanged, serves it.

The backup is read and checked like every restore (the same candidates, journal chain and
loss rule as `memvault restore`); the memories as of the end of the shipped journal (or
`--at`) go back with their ids and the payload mem0 wrote (watch/payload.py). Vectors: the
backup's own when mem0's column has their dimension; otherwise, and for memories the journal
added or re-worded after the snapshot (the journal carries texts, not vectors), made by the
configured embedder (MEMVAULT_EMBEDDER: set it to the model mem0 uses now), which must make
vectors of the column's dimension. A missing table is created as mem0 creates it (id uuid,
vector(N), payload jsonb, its HNSW and text_lemmatized indexes). A table holding rows is
refused without `--yes`. Rows go in with one COPY in one transaction (mem0's HNSW index is
rebuilt after, so the memories are served, exactly, before the index is back); the counts per
namespace are read back and compared. mem0's history SQLite is not touched.
Finally the ledger of the lineage records the table as restored, so that a watcher of it
accepts the new table instead of alerting on it.
"""

from __future__ import annotations

import logging
import struct
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from memvault.backup import RestoreLoss, RestoreRefused, jsonlines, plan_restore
from memvault.backup.crypto import cipher_for
from memvault.backup.destinations import open_destinations
from memvault.backup.format import read_snapshot
from memvault.config import redact_url
from memvault.guard.ledger import observe, read_ledger, write_ledger
from memvault.progress import NoProgress, Progress
from memvault.store import namespace_key
from memvault.watch.lineage import BACKEND, watched_lineages
from memvault.watch.payload import mem0_identity, mem0_payload
from memvault.watch.table import Unreachable, WatchedTable, tried

if TYPE_CHECKING:
    from memvault.backup.restore import RestorePlan
    from memvault.config import Settings
    from memvault.embed import Embedder

log = logging.getLogger("memvault.watch")
EMBED_BATCH = 256


@dataclass
class Mem0Restore:
    plan: dict[str, Any]
    target: str
    created_table: bool
    replaced: int  # rows the table held before (deleted, --yes)
    written: int
    reembedded: int
    dims: int
    counts: dict[str, int]
    searchable_s: float = 0.0
    indexed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan, "target": self.target, "created_table": self.created_table,
                "replaced": self.replaced, "written": self.written,
                "reembedded": self.reembedded, "dims": self.dims, "counts": self.counts,
                "total": sum(self.counts.values()), "searchable_s": round(self.searchable_s, 3),
                "indexed_s": round(self.indexed_s, 3), "warnings": self.warnings,
                "mem0_history": "mem0's history SQLite is left as it is"}


Row = dict[str, Any]  # a memory's fields, as a backup line or a journal entry holds them


def final_state(plan: RestorePlan, rows: list[Row],
                vectors: tuple[list[str], np.ndarray] | None
                ) -> tuple[dict[str, Row], dict[str, np.ndarray]]:
    """The memories after the snapshot and the replayed journal, and the vectors the backup
    holds for those whose text the journal did not change."""
    state = {r["id"]: r for r in rows}
    kept: dict[str, np.ndarray] = {}
    if vectors is not None:
        ids, matrix = vectors
        kept = {memory_id: matrix[i] for i, memory_id in enumerate(ids) if memory_id in state}
    for entry in plan.replay:
        if entry.op in ("ADD", "UPDATE") and entry.after:
            old = state.get(entry.memory_id)
            if old is None or old.get("memory") != entry.after.get("memory"):
                kept.pop(entry.memory_id, None)
            state[entry.memory_id] = entry.after
        elif entry.op == "DELETE":
            state.pop(entry.memory_id, None)
            kept.pop(entry.memory_id, None)
    return state, kept


def counts_of(rows: Iterable[Row]) -> dict[str, int]:
    triples = Counter((r.get("user_id"), r.get("agent_id"), r.get("run_id")) for r in rows)
    counts: Counter[str] = Counter()
    for triple, count in triples.items():
        counts[namespace_key(*triple)] += count
    return dict(sorted(counts.items()))


def restore_to_mem0(settings: Settings, dsn: str, collection: str = "memories",
                    which: str = "latest", at: str | datetime | None = None, *,
                    yes: bool = False, lineage: str | None = None, allow_loss: bool = False,
                    embedder: Embedder | None = None, progress: Progress | None = None,
                    index: bool = True) -> Mem0Restore:
    """`index`: rebuild mem0's HNSW index after the load (False leaves it to mem0, which
    creates it when it starts; the bench measures the load alone)."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    destinations = open_destinations(settings)
    if lineage is None and which == "latest":
        watched = watched_lineages(destinations, collection)
        # Backups of several stores here (memvault's own beside this mem0's): this mem0's.
        lineage = watched[0] if len(watched) == 1 else None
    plan = plan_restore(settings, which, at, destinations=destinations, lineage=lineage)
    if plan.loss.lost and not allow_loss:
        raise RestoreLoss("restore refused, it would lose data: " + plan.loss.describe(),
                          loss=plan.loss.to_json(),
                          hint="`memvault backup verify --all --read-data` shows what is "
                          "damaged; --allow-loss restores what is there")
    manifest = plan.manifest
    secret = settings.backup_encryption_key
    data = read_snapshot(plan.entry.destination, manifest,
                         cipher_for(secret.get_secret_value() if secret else None),
                         folder=plan.entry.folder)
    active = manifest.active_embedder
    backup_vectors = data.vectors.get(active) if active else None
    backup_dims = next((e.dims for e in manifest.embedders if e.key == active), None)
    state, kept = final_state(plan, data.rows, backup_vectors)
    expected = counts_of(state.values())
    if expected != plan.expected_counts:
        raise RestoreRefused(f"the backup and its journal give counts {expected}, the plan "
                             f"{plan.expected_counts}", hint="run `memvault backup verify "
                             "--all --read-data`")
    target = Target(dsn, collection)
    try:
        dims, present = target.inspect()
        if present and not yes:
            raise RestoreRefused(
                f"mem0's table {collection} in {redact_url(dsn)} holds {present} rows; restore "
                "only fills an empty table", hint="pass --yes to replace them (stop mem0 first)")
        created = dims is None
        if dims is None:  # no table: mem0's dimension is the configured model's when one is set
            dims = _new_table_dims(settings, backup_dims, embedder)
        if backup_dims != dims:
            kept = {}
        missing = [r for r in state.values() if r["id"] not in kept]
        made = _embed(settings, embedder, missing, dims, progress) if missing else {}
        records = list(state.values())
        advance = progress.task(f"writing {len(records)} memories into mem0", len(records))
        target.write(records, {**kept, **made}, dims, replace=bool(present))
        advance(len(records))
        counts = target.counts()
        if counts != expected:
            raise RestoreRefused(f"after writing, mem0's table holds {counts}, expected "
                                 f"{expected}", hint="re-run the restore with --yes")
        searchable = time.perf_counter() - started
        if index:
            target.build_indexes()
        reader = WatchedTable(dsn, collection)
        try:
            identity = reader.identity()
        finally:
            reader.close()
    finally:
        target.close()
    report = Mem0Restore(plan.to_json(), f"{redact_url(dsn)} table {collection}", created,
                         present, len(records), len(made), dims, counts, searchable,
                         time.perf_counter() - started, list(plan.warnings))
    seq = max(manifest.seq, plan.chain.upto_seq, plan.loss.high_water.seq)
    previous, _ = read_ledger(destinations, manifest.lineage_id)
    if previous is not None and previous.backend != BACKEND:
        # A memvault store's own lineage: its ledger describes that store, not this table.
        log.info("restored %d memories into mem0's %s", len(records), report.target)
        return report
    record = observe(previous, lineage_id=manifest.lineage_id, store_id=identity.store_id,
                     backend=BACKEND, location=f"{redact_url(dsn)} table {collection} "
                     f"({identity.describe()})",
                     active_embedder=mem0_identity(collection, dims).key, seq=seq,
                     namespaces=counts, event="restored",
                     note=f"restored into mem0 from backup {manifest.id}"
                     f"{f', {len(made)} re-embedded' if made else ''}")
    problems = write_ledger(destinations, record)
    report.warnings += problems
    log.info("restored %d memories from %s into mem0's %s (%s)", len(records), manifest.id,
                report.target, identity.describe())
    return report


def _new_table_dims(settings: Settings, backup_dims: int | None,
                    embedder: Embedder | None) -> int:
    if "embedder" in settings.model_fields_set or embedder is not None or not backup_dims:
        return _configured(settings, embedder).identity().dims
    return backup_dims


def _configured(settings: Settings, embedder: Embedder | None) -> Embedder:
    if embedder is not None:
        return embedder
    from memvault.embed import make_embedder

    return make_embedder(settings.embedder, settings)


def _embed(settings: Settings, embedder: Embedder | None, records: list[Row],
           dims: int, progress: Progress) -> dict[str, np.ndarray]:
    model = _configured(settings, embedder)
    made = model.identity()
    if made.dims != dims:
        raise RestoreRefused(
            f"{len(records)} memories need vectors for mem0's vector({dims}) column (re-worded "
            f"or added after the snapshot, or stored at another dimension), but the configured "
            f"embedder {made.key} makes {made.dims}-dimensional vectors",
            hint="set MEMVAULT_EMBEDDER (and MEMVAULT_EMBEDDER_URL) to the model mem0 uses, "
            "e.g. openai:text-embedding-3-small or ollama:nomic-embed-text")
    advance = progress.task(f"embedding with {made.key}", len(records))
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(records), EMBED_BATCH):
        batch = records[start:start + EMBED_BATCH]
        matrix = model.embed([r["memory"] for r in batch])
        out.update({r["id"]: matrix[i] for i, r in enumerate(batch)})
        advance(len(batch))
    return out


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def copy_stream(records: list[Row], vectors: dict[str, np.ndarray], dims: int,
                chunk: int = 8 << 20) -> Iterator[bytes]:
    """A binary COPY stream of (id uuid, vector, payload jsonb) rows, in chunks of about
    `chunk` bytes: one struct and one orjson dump per row instead of psycopg's per-field
    dumpers (mem0's rows are wide: 6 KB of vector at 1536 dims)."""
    head = struct.pack(">hi", 3, 16)
    vector_head = struct.pack(">iHH", 4 + 4 * dims, dims, 0)
    parts: list[bytes] = [_COPY_HEADER]
    size = 0
    for record in records:
        payload = jsonlines.dumps(mem0_payload(record))
        row = b"".join((head, uuid.UUID(record["id"]).bytes, vector_head,
                        np.asarray(vectors[record["id"]], dtype=">f4").tobytes(),
                        struct.pack(">iB", len(payload) + 1, 1), payload))
        parts.append(row)
        size += len(row)
        if size >= chunk:
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(_COPY_TRAILER)
    yield b"".join(parts)


class Target:
    """mem0's table, written: the one place the watch package opens a writing session."""

    def __init__(self, dsn: str, collection: str) -> None:
        from psycopg import sql

        self.dsn = dsn
        self.collection = collection
        schema, _, name = collection.rpartition(".")
        self.name = name
        self.table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        self._conn: Any = None

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None:
            try:
                self._conn = psycopg.connect(self.dsn, connect_timeout=10, autocommit=True)
            except psycopg.Error as exc:
                raise Unreachable(f"cannot connect to mem0's database ({tried(self.dsn)}): "
                                  f"{redact_url(str(exc).strip())}",
                                  hint="check the DSN mem0 uses now") from None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def inspect(self) -> tuple[int | None, int]:
        """(the vector column's dimension, rows), or (None, 0) when there is no table."""
        from psycopg import sql

        conn = self._connection()
        found = conn.execute("SELECT to_regclass(%s)::oid", (self.collection,)).fetchone()[0]
        if found is None:
            return None, 0
        kind = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                            "attrelid = %s AND attname = 'vector'", (found,)).fetchone()
        if not kind or not kind[0].startswith("vector("):
            raise RestoreRefused(f"{self.collection} has no vector(N) column: not mem0's table",
                                 hint="pass --collection with mem0's table name")
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.table)).fetchone()[0]
        return int(kind[0][7:-1]), int(rows)

    def write(self, records: list[Row], vectors: dict[str, np.ndarray], dims: int,
              replace: bool) -> None:
        from psycopg import sql
        from psycopg.copy import QueuedLibpqWriter

        conn = self._connection()
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            # mem0's own DDL (mem0/vector_stores/pgvector.py create_col).
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id UUID PRIMARY KEY, vector "
                                 "vector({}), payload JSONB)").format(self.table,
                                                                      sql.Literal(dims)))
            if replace:
                conn.execute(sql.SQL("DELETE FROM {}").format(self.table))
            # Rebuilt once after the load instead of row by row (build_indexes).
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(self._index("hnsw")))
            # A writer thread sends to the server while this one formats rows.
            with conn.cursor() as cur, cur.copy(sql.SQL(
                    "COPY {} (id, vector, payload) FROM STDIN (FORMAT BINARY)").format(
                    self.table), writer=QueuedLibpqWriter(cur)) as copy:
                for chunk in copy_stream(records, vectors, dims):
                    copy.write(chunk)

    def _index(self, kind: str) -> Any:
        from psycopg import sql

        schema = self.collection.rpartition(".")[0]
        name = f"{self.name}_{kind}_idx"
        return sql.Identifier(schema, name) if schema else sql.Identifier(name)

    def build_indexes(self) -> None:
        from psycopg import sql

        conn = self._connection()
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (vector "
                             "vector_cosine_ops)").format(sql.Identifier(f"{self.name}_hnsw_idx"),
                                                          self.table))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin(to_tsvector("
                             "'simple', payload->>'text_lemmatized'))").format(
                                 sql.Identifier(f"{self.name}_text_lemmatized_idx"), self.table))

    def counts(self) -> dict[str, int]:
        """Memories per namespace as mem0's rows hold them (string entity ids, as mem0 and
        the watcher read them)."""
        from psycopg import sql

        def entity(key: str) -> sql.Composable:
            return sql.SQL("CASE WHEN jsonb_typeof(payload->{k}) = 'string' THEN payload->>{k} "
                           "END").format(k=sql.Literal(key))

        rows = self._connection().execute(sql.SQL(
            "SELECT {}, {}, {}, count(*) FROM {} GROUP BY 1, 2, 3").format(
                entity("user_id"), entity("agent_id"), entity("run_id"), self.table)).fetchall()
        counts: Counter[str] = Counter()
        for user, agent, run, count in rows:
            counts[namespace_key(user, agent, run)] += int(count)
        return dict(sorted(counts.items()))
