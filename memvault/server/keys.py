"""Namespace-scoped API keys, kept hashed in the store's metadata (`Store.set_meta`).

Why the store's metadata and not a table: both backends already implement get_meta/set_meta,
so keys need no migration, travel with the store (every API replica sees the same keys at
once, and revocation takes effect on the next request), and a handful of keys fit one value.
Only the sha256 of each token is kept: the tokens are 256-bit random strings, so a plain hash
is enough (no password-stretching needed) and a leaked store does not leak usable keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from memvault.errors import InvalidInput, NotFound
from memvault.memory.validation import check_entities
from memvault.store import MetaKey, Store, utc_now

META_KEY = MetaKey.API_KEYS
TOKEN_PREFIX = "mvk_"
_lock = threading.Lock()  # read-modify-write of the key list within one process


@dataclass(frozen=True)
class ApiKey:
    id: str
    hash: str
    scope: dict[str, str]  # e.g. {"user_id": "alice"}: the key sees only these memories
    created_at: str
    label: str | None = None
    revoked_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """What `keys list` shows: everything but the hash."""
        data = asdict(self)
        data.pop("hash")
        data.pop("extra")
        data["active"] = self.active
        return data


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _load(store: Store) -> list[ApiKey]:
    return [ApiKey(**item) for item in store.get_meta(META_KEY) or []]


def _save(store: Store, keys: list[ApiKey]) -> None:
    store.set_meta(META_KEY, [asdict(k) for k in keys])


def list_keys(store: Store) -> list[ApiKey]:
    return _load(store)


def create_key(
    store: Store,
    *,
    user_id: str | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
    label: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key scoped to the given ids; returns it and the token (shown once, never stored)."""
    try:
        scope = check_entities(user_id, agent_id, run_id)
    except InvalidInput:
        raise InvalidInput("a key must be scoped to at least one of --user-id, --agent-id, "
                           "--run-id", hint="the admin key (MEMVAULT_ADMIN_API_KEY) sees all "
                           "namespaces") from None
    key_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(id=key_id, hash=token_hash(token), scope=scope, created_at=utc_now(),
                 label=label)
    with _lock:
        _save(store, [*_load(store), key])
    return key, token


def revoke_key(store: Store, key_id: str) -> ApiKey:
    with _lock:
        keys = _load(store)
        for position, key in enumerate(keys):
            if key.id == key_id:
                if key.active:
                    keys[position] = ApiKey(**{**asdict(key), "revoked_at": utc_now()})
                    _save(store, keys)
                return keys[position]
    raise NotFound(f"no API key with id {key_id}", hint="`memvault keys list` shows the ids")


def find_key(store: Store, token: str) -> ApiKey | None:
    """The active key whose token this is, or None. Constant-time on the hash."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id = token[len(TOKEN_PREFIX):].split("_", 1)[0]
    digest = token_hash(token)
    for key in _load(store):
        if key.id == key_id and key.active and hmac.compare_digest(key.hash, digest):
            return key
    return None
