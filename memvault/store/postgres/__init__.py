"""The production store: PostgreSQL + pgvector, shared by any number of stateless replicas.

Design, and why:
- Everything lives in one schema, `memvault`, so the database can also hold mem0's tables (an
  import source) or anything else; only a `memvault` schema that is not ours is refused.
- One `vectors` table keyed (memory_id, embedder_key) with an untyped `vector` column, because a
  store holds vectors of several embedders while re-embedding. HNSW needs a fixed dimension, so
  each registered embedder gets its own partial expression index
  `USING hnsw ((vector::vector(DIMS)) vector_cosine_ops) WHERE embedder_key = 'KEY'`; searches
  spell the same expression and the key as a literal so the planner can use that index.
- A search pinned to a small user, agent or run ranks that scope's binary codes from its own
  index and re-scores the closest with their vectors (scope.py, vector_search.py); other
  filtered searches use pgvector's iterative scan; when a selective filter still comes up
  short of top_k (the walk hit hnsw.max_scan_tuples), the matching rows are ranked exactly.
- No in-process state that can go stale: reads and searches go to the database, so two
  processes on one database always agree.
- Every write transaction first locks the single `journal_counter` row. That serializes writers
  across processes exactly as SQLite's BEGIN IMMEDIATE does: dedup on (namespace, hash) sees the
  other writer's rows, and journal seqs become visible in commit order, so a reader that has
  seen seq N never later finds a smaller one appear.
- Text columns use the "C" collation and timestamps stay ISO text, and metadata is `json` (kept
  verbatim, like SQLite's TEXT), so comparisons and round trips match the SQLite backend.
- Every wait on the server is bounded by the configured timeout (`TimedConnection`): a
  database that vanishes or freezes mid-request raises StoreUnavailable, never hangs.
"""

from memvault.store.postgres.codec import binary_copy_vectors
from memvault.store.postgres.connections import PostgresTarget, TimedConnection
from memvault.store.postgres.hnsw import BULK_REINDEX_MIN_ROWS, HNSW_EF_CONSTRUCTION, HNSW_M
from memvault.store.postgres.schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA
from memvault.store.postgres.snapshot import PostgresSnapshot
from memvault.store.postgres.store import PostgresStore

__all__ = [
    "BULK_REINDEX_MIN_ROWS",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_M",
    "MIGRATIONS",
    "MIGRATION_LOCK",
    "SCHEMA",
    "PostgresSnapshot",
    "PostgresStore",
    "PostgresTarget",
    "TimedConnection",
    "binary_copy_vectors",
]
