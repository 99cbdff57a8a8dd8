"""mem0's nested config dict (`Memory.from_config`) mapped onto memvault settings. Every key
either maps to what it means in mem0 or is refused with a ConfigError naming it: a config
that silently lands in another store than the one it names is how memories get lost."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from memvault.errors import ConfigError
from memvault.store.records import MetaKey

if TYPE_CHECKING:
    from memvault.store import Store

# mem0 keys memvault has no use for and that change nothing about where memories live.
IGNORED = frozenset({"history_db_path", "version"})
REFUSED = {
    "graph_store": "memvault has no graph store; drop graph_store (memories and their "
                   "history stay in the vector store's database)",
    "reranker": "memvault reranks with search(rerank=True) on its own scores; drop reranker",
}
# mem0's prompt keys and the memvault settings they become (docs/api.md, "Fact extraction").
PROMPTS = {
    "custom_instructions": "llm_instructions",  # mem0 2.x: added to the extraction prompt
    "custom_fact_extraction_prompt": "llm_extraction_prompt",  # mem0 1.x: replaces it
    "custom_update_memory_prompt": "llm_update_prompt",  # replaces the reconcile instructions
}
# Where mem0 configs name the vector dimension; memvault checks it against its embedder.
DIMS_KEY = "embedding_model_dims"
COLLECTION_KEY = "collection_name"
PGVECTOR_FIELDS = frozenset({"user", "password", "host", "port", "dbname", "sslmode",
                             "connection_string", DIMS_KEY, COLLECTION_KEY})


def translate(config: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in config.items():
        if key in REFUSED:
            raise ConfigError(f"mem0 config key {key!r} is not supported", hint=REFUSED[key])
        if key in IGNORED:
            continue
        if key in PROMPTS:
            settings[PROMPTS[key]] = _prompt(key, value)
            continue
        if key in ("embedder", "llm") and isinstance(value, dict):
            settings.update(_model(key, value))
        elif key == "vector_store" and isinstance(value, dict):
            settings["database_url"] = _database_url(value)
        else:
            settings[key] = value
    return settings


def _model(key: str, value: dict[str, Any]) -> dict[str, Any]:
    provider = value.get("provider")
    inner = {k: v for k, v in (value.get("config") or {}).items() if k != DIMS_KEY}
    model = inner.get("model")
    out: dict[str, Any] = {}
    if provider in ("openai", "ollama"):
        if not model:
            raise ConfigError(f"{key}.config.model is missing for provider {provider!r}",
                              hint=f"name the model, e.g. {{'provider': {provider!r}, "
                              "'config': {'model': 'text-embedding-3-small'}}")
        out[key] = f"{provider}:{model}"
    elif provider in ("local", None) and key == "embedder":
        out[key] = "local"
    else:
        raise ConfigError(f"{key} provider {provider!r} is not supported",
                          hint="use openai (any OpenAI-compatible endpoint) or ollama"
                          + (", or local" if key == "embedder" else ""))
    base = inner.get("openai_base_url") or inner.get("ollama_base_url")
    if base:
        out[f"{key}_url"] = base
    if inner.get("api_key"):
        out[f"{key}_api_key"] = inner["api_key"]
    return out


def _database_url(value: dict[str, Any]) -> str:
    provider = value.get("provider")
    inner = dict(value.get("config") or {})
    inner.pop(DIMS_KEY, None)  # checked against the embedder by `expected_dims`
    inner.pop(COLLECTION_KEY, None)  # checked against the store by `check_collection`
    if provider == "sqlite":
        path = inner.pop("path", None)
        _no_more(provider, inner)
        if not path:
            raise ConfigError("vector_store.config.path is missing for provider 'sqlite'",
                              hint="name the SQLite file, e.g. {'path': 'memvault.db'}")
        return f"sqlite:///{path}"
    if provider in ("pgvector", "postgres"):
        unknown = set(inner) - PGVECTOR_FIELDS
        _no_more(provider, {k: inner[k] for k in unknown})
        if inner.get("connection_string"):
            return str(inner["connection_string"])
        if not inner.get("dbname") or not inner.get("host"):
            raise ConfigError("vector_store pgvector needs connection_string, or host and "
                              "dbname (with user, password, port)",
                              hint="e.g. {'host': 'db', 'port': 5432, 'user': 'mem0', "
                              "'password': '...', 'dbname': 'mem0'}")
        auth = quote(str(inner.get("user") or ""), safe="")
        if inner.get("password"):
            auth += ":" + quote(str(inner["password"]), safe="")
        host, port = str(inner["host"]), inner.get("port")
        query = {"sslmode": inner.get("sslmode")}
        if host.startswith("/"):  # libpq: a host that is a path names a Unix socket folder
            host, query["host"] = "", host
            query["port"], port = port, None
        netloc = (auth + "@" if auth else "") + host + (f":{port}" if port else "")
        params = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in query.items() if v)
        return f"postgresql://{netloc}/{inner['dbname']}" + (f"?{params}" if params else "")
    raise ConfigError(f"vector_store provider {provider!r} is not supported",
                      hint="memvault stores memories in SQLite ('sqlite' with a path) or "
                      "PostgreSQL ('pgvector'); bring Qdrant or other stores' memories over "
                      "with `memvault import mem0`")


def _no_more(provider: str, rest: dict[str, Any]) -> None:
    if rest:
        raise ConfigError(f"vector_store.config key {sorted(rest)[0]!r} is not supported for "
                          f"provider {provider!r}", hint="remove it")


def _prompt(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"mem0 config key {key!r} must be a non-empty string",
                          hint=f"give the prompt text, or drop {key}")
    return value


def _dims_in(section: Any) -> Any:
    inner = section.get("config") if isinstance(section, dict) else None
    return inner.get(DIMS_KEY) if isinstance(inner, dict) else None


def expected_dims(config: dict[str, Any]) -> int | None:
    """The vector dimension a mem0 config names (vector_store.config or embedder.config
    `embedding_model_dims`), or None. mem0 creates its table with it; memvault takes the
    dimension from its embedder and checks that the two agree (`check_dims`)."""
    found = {where: _dims_in(config.get(where)) for where in ("vector_store", "embedder")}
    given = {where: v for where, v in found.items() if v is not None}
    for where, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}.config.{DIMS_KEY} must be a positive integer, got "
                              f"{value!r}", hint=f"drop {DIMS_KEY}: memvault reads the "
                              "dimension from the embedder")
    if len(set(given.values())) > 1:
        raise ConfigError(f"vector_store and embedder name different {DIMS_KEY}: "
                          f"{given['vector_store']} and {given['embedder']}",
                          hint="give one dimension, the embedder's")
    return next(iter(given.values()), None)


def check_dims(expected: int, embedder: str, dims: int) -> None:
    if expected != dims:
        raise ConfigError(
            f"{DIMS_KEY} is {expected}, but the configured embedder {embedder} makes "
            f"{dims}-dimensional vectors",
            hint=f"set {DIMS_KEY} to {dims} or drop it (memvault reads the dimension from the "
            f"embedder), or configure the embedder that makes {expected}-dimensional vectors")


def collection_name(config: dict[str, Any]) -> str | None:
    """vector_store.config.collection_name, checked to be a printable name, or None."""
    section = config.get("vector_store")
    inner = section.get("config") if isinstance(section, dict) else None
    name = inner.get(COLLECTION_KEY) if isinstance(inner, dict) else None
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip() or len(name) > 256 \
            or not name.isprintable():
        raise ConfigError(f"vector_store.config.{COLLECTION_KEY} must be 1-256 printable "
                          f"characters, got {str(name)[:40]!r}", hint="name the collection, "
                          "e.g. 'memories'")
    return name


def check_collection(store: Store, name: str) -> None:
    """A memvault database holds one store. The first mem0 config naming a collection on it
    claims it; a config naming another collection is refused, so two stores a mem0 user kept
    apart by collection never silently share one database."""
    claimed = store.get_meta(MetaKey.COLLECTION_NAME)
    if claimed is None:
        store.set_meta(MetaKey.COLLECTION_NAME, name)
        return
    if claimed != name:
        raise ConfigError(
            f"vector_store.config.{COLLECTION_KEY} is {name!r}, but this database holds the "
            f"memvault store of collection {claimed!r}",
            hint=f"memvault keeps one collection per database: point this config at another "
            f"database (or SQLite path) for {name!r}, or use collection_name={claimed!r}")
