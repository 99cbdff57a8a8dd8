"""Names vulture cannot see used (run by `make test`: `vulture`, paths in pyproject.toml).

Each is used from outside memvault's own code: by Python itself, a library that reads it by
name, the mem0 API, JSON shapes, tests or the bench. Anything else vulture reports is dead:
delete it instead of listing it here."""

# ruff: noqa
# Module __getattr__ (PEP 562): lazy `memvault.Memory`, `memvault.server.create_app`.
__getattr__
# pydantic-settings' hook signature.
dotenv_settings
file_secret_settings
# onnxruntime.SessionOptions and psycopg connection/cursor attributes, set by name.
intra_op_num_threads
inter_op_num_threads
log_severity_level
read_only
isolation_level
itersize
autocommit
# logging.LogRecord.msg, rewritten to redact secrets.
msg
# Response and report fields (mem0's JSON shapes, drill reports, file identities).
previous_memory
score_details
old_memory
new_memory
is_deleted
total_memories
started_at
fallbacks
device
# mem0's Python API.
from_config
# Read by tests and the bench: counters of the batchers, bulk-load phases, the reference
# graph the bundled embedder is checked against, the PostgreSQL store's index names and the
# connected server's identity.
batches
requests
calls
embed_batcher
last_bulk_load
reference_graph
hnsw_index_name
server_identity
legacy_namespace_key
# Arriving with the composition root and hybrid search: the periodic loop's counters and the
# app/runtime helpers the tests build on; an enum member chosen by its value from settings.
runs
crashes
app_over
runtime_of
HYBRID
# Read by the console's Jinja2 templates (memvault/server/console/templates/).
signed_in
# usearch reads it: the search breadth of the approximate index (store/sqlite/ann.py).
expansion_search
