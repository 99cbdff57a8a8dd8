"""Migration: import from mem0 (pgvector table, pg_dump file, REST server) or a memvault export,
and export to JSON lines. See docs/migration.md.

    source = Mem0Table(dsn, "memories")          # or Mem0Dump(path), Mem0Rest(url), JsonlFile(path)
    report = run_import(memory, source, ImportOptions(dry_run=False), progress)
    export_jsonl(store, Path("out.jsonl.zst"), with_vectors=True)
"""

from memvault.migrate.export import ExportFilter, ExportReport, export_jsonl
from memvault.migrate.importer import ImportOptions, ImportReport, run_import
from memvault.migrate.rows import MEM0_RESERVED, MigrationError, SourceRow
from memvault.migrate.sources import (
    JsonlFile,
    Mem0Dump,
    Mem0Rest,
    Mem0Table,
    Source,
    find_pg_restore,
)

__all__ = [
    "MEM0_RESERVED", "ExportFilter", "ExportReport", "ImportOptions", "ImportReport",
    "JsonlFile", "Mem0Dump", "Mem0Rest", "Mem0Table", "MigrationError", "Source", "SourceRow",
    "export_jsonl", "find_pg_restore", "run_import",
]
