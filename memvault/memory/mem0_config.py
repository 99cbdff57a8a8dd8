"""mem0's nested config dict (`Memory.from_config`) mapped onto memvault settings. Every key
either maps to what it means in mem0 or is refused with a ConfigError naming it: a config
that silently lands in another store than the one it names is how memories get lost."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from memvault.errors import ConfigError

# mem0 keys memvault has no use for and that change nothing about where memories live.
IGNORED = frozenset({"history_db_path", "version"})
REFUSED = {
    "graph_store": "memvault has no graph store; drop graph_store (memories and their "
                   "history stay in the vector store's database)",
    "reranker": "memvault reranks with search(rerank=True) on its own scores; drop reranker",
    "custom_fact_extraction_prompt": "memvault's extraction prompt is fixed; drop the key, or "
                                     "add with infer=False and extract facts yourself",
    "custom_instructions": "memvault's extraction prompt is fixed; drop the key, or add with "
                           "infer=False and extract facts yourself",
    "custom_update_memory_prompt": "memvault's update prompt is fixed; drop the key",
}
PGVECTOR_FIELDS = frozenset({"user", "password", "host", "port", "dbname", "sslmode",
                             "connection_string"})


def translate(config: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in config.items():
        if key in REFUSED:
            raise ConfigError(f"mem0 config key {key!r} is not supported", hint=REFUSED[key])
        if key in IGNORED:
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
    inner = value.get("config") or {}
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
    if "collection_name" in rest:
        raise ConfigError("vector_store.config.collection_name is not supported",
                          hint="memvault keeps one collection per database: drop "
                          "collection_name, and use another database to keep stores apart")
    if rest:
        raise ConfigError(f"vector_store.config key {sorted(rest)[0]!r} is not supported for "
                          f"provider {provider!r}", hint="remove it")
