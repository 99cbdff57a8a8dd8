"""Namespaces as the console shows and picks them: the store's namespace keys
(`store.namespace_key`: 'user:alice/agent:bot', '%' and '/' inside an id escaped) read back into
their ids, and filtered by what the caller's key may see (the REST scope rule)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from memvault.errors import InvalidInput
from memvault.server.auth import Principal
from memvault.store import ENTITY_KEYS, namespace_key

_ESCAPED = re.compile("%25|%2F")
_UNESCAPE = {"%25": "%", "%2F": "/"}
_KEY_OF_TYPE = {key.removesuffix("_id"): key for key in ENTITY_KEYS}


def entity_ids(key: str) -> dict[str, str | None]:
    """The (user_id, agent_id, run_id) a namespace key names; InvalidInput for a key
    `namespace_key` cannot have made."""
    ids: dict[str, str | None] = dict.fromkeys(ENTITY_KEYS)
    for part in key.split("/") if key else []:
        kind, sep, value = part.partition(":")
        name = _KEY_OF_TYPE.get(kind)
        if not sep or name is None or ids[name] is not None:
            raise InvalidInput(f"{key!r} is not a namespace (like 'user:alice/agent:bot')")
        ids[name] = _ESCAPED.sub(lambda m: _UNESCAPE[m.group(0)], value)
    if namespace_key(*(ids[k] for k in ENTITY_KEYS)) != key:
        raise InvalidInput(f"{key!r} is not a namespace (like 'user:alice/agent:bot')")
    return ids


@dataclass(frozen=True)
class NamespaceCount:
    key: str
    count: int


def visible_counts(counts: dict[str, int], principal: Principal) -> list[NamespaceCount]:
    """The namespaces the caller may see, largest first (a key the store holds but that does
    not parse is shown to the admin only)."""
    shown = []
    for key, count in counts.items():
        if principal.admin:
            shown.append(NamespaceCount(key, count))
            continue
        try:
            ids = entity_ids(key)
        except InvalidInput:
            continue
        if principal.can_see(ids):
            shown.append(NamespaceCount(key, count))
    return sorted(shown, key=lambda n: (-n.count, n.key))
