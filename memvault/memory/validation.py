"""Checks on caller input. Each failure raises InvalidInput naming the field and the fix."""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import date
from typing import Any

from memvault.errors import InvalidInput
from memvault.memory.fusion import SearchMode
from memvault.store.records import ENTITY_KEYS

MAX_TEXT_BYTES = 64 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_ID_CHARS = 256
# memory_type and a message's name (stored as actor_id): short labels, like the ids.
MAX_LABEL_CHARS = 256
# Nesting of metadata objects and lists (backup writers and readers recurse into it).
MAX_METADATA_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TOP_K = 1000
MAX_MESSAGES = 1000
# Keys that decide a memory's tenant: never taken from caller metadata (mem0 fix).
RESERVED_METADATA_KEYS = {*ENTITY_KEYS, "actor_id"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_text(value: Any, field: str = "text") -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, got {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{field} is not valid UTF-8 (it contains a lone surrogate)",
            hint="decode the input as UTF-8 with errors='strict' before sending it",
        ) from None
    if not value.strip():
        raise InvalidInput(f"{field} is empty", hint="send the text to remember")
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(
            f"{field} is {size} bytes, over the limit of {MAX_TEXT_BYTES}",
            hint="split long documents into separate memories",
        )
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL character")
    return value


def check_entity_id(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, got {type(value).__name__}")
    if not value.strip() or len(value) > MAX_ID_CHARS or _CONTROL.search(value):
        raise InvalidInput(
            f"{name} must be 1-{MAX_ID_CHARS} printable characters, got {value[:40]!r}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} is not valid UTF-8") from None
    return value


def check_entities(
    user_id: Any, agent_id: Any, run_id: Any, *, required: bool = True
) -> dict[str, str]:
    ids = {
        name: check_entity_id(name, value)
        for name, value in zip(ENTITY_KEYS, (user_id, agent_id, run_id), strict=True)
    }
    present = {k: v for k, v in ids.items() if v is not None}
    if required and not present:
        raise InvalidInput(
            "at least one of user_id, agent_id or run_id is required",
            hint="memories are always scoped to a user, an agent or a run",
        )
    return present


def check_metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidInput(f"metadata must be an object, got {type(metadata).__name__}")
    cleaned = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidInput(f"metadata keys must be strings, got {key!r}")
        if key in RESERVED_METADATA_KEYS:
            continue
        cleaned[key] = value
    _check_json_values(cleaned)
    try:
        encoded = json.dumps(cleaned, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"metadata must be JSON-serialisable: {exc}") from None
    except UnicodeEncodeError:
        raise InvalidInput("metadata contains text that is not valid UTF-8") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is {len(encoded)} bytes, over {MAX_METADATA_BYTES}")
    return cleaned or None


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if key.isidentifier() else f"{parent}[{json.dumps(key)}]"


def _check_json_values(metadata: dict[str, Any]) -> None:
    """Every value must survive a backup byte-exact: 64-bit integers, finite floats, JSON
    types only, bounded nesting. A refusal names the key path (metadata.a.b[2])."""
    pending: list[tuple[str, Any, int]] = [("metadata", metadata, 0)]
    while pending:
        path, value, depth = pending.pop()
        if isinstance(value, str) and "\x00" in value:
            # PostgreSQL cannot read a NUL back out of JSON: every filter on the key would fail.
            raise InvalidInput(f"{path} contains a NUL character", hint="remove it")
        if value is None or isinstance(value, bool | str):
            continue
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise InvalidInput(
                    f"{path} is {value}, outside the 64-bit integer range "
                    f"({INT64_MIN}..{INT64_MAX})",
                    hint="send a larger number as a string")
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInput(
                    f"{path} is {value}: JSON has no NaN or Infinity, send a finite number "
                    "or a string", hint="replace the value with null or a string")
            continue
        if not isinstance(value, dict | list | tuple):
            raise InvalidInput(f"{path} is a {type(value).__name__}, not a JSON value "
                               "(string, number, boolean, null, list or object)")
        if depth >= MAX_METADATA_DEPTH:
            raise InvalidInput(f"{path} nests deeper than {MAX_METADATA_DEPTH} levels",
                               hint="flatten the metadata")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or "\x00" in key:
                    raise InvalidInput(f"{path}: metadata keys must be strings without NUL, "
                                       f"got {key!r}")
                pending.append((_path(path, key), item, depth + 1))
        else:
            pending.extend((_path(path, i), item, depth + 1) for i, item in enumerate(value))


def check_label(value: Any, field: str) -> str | None:
    """memory_type and a message's name: optional short printable strings."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, got {type(value).__name__}")
    if len(value) > MAX_LABEL_CHARS or _CONTROL.search(value):
        raise InvalidInput(
            f"{field} must be at most {MAX_LABEL_CHARS} printable characters, got "
            f"{len(value)} characters starting {value[:40]!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} is not valid UTF-8 (it contains a lone surrogate)") from None
    return value


def check_expiration(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        raise InvalidInput("expiration_date must be a string YYYY-MM-DD")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidInput(f"expiration_date must be YYYY-MM-DD, got {value[:40]!r}") from None


def check_memory_id(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"memory_id must be a UUID string, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput(f"memory_id {value[:60]!r} is not a valid UUID") from None


def check_top_k(value: Any, name: str = "top_k") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, got {type(value).__name__}")
    if not 1 <= value <= MAX_TOP_K:
        raise InvalidInput(f"{name} must be between 1 and {MAX_TOP_K}, got {value}")
    return value


def check_threshold(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"threshold must be a number, got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(f"threshold must be between 0 and 1, got {value}")
    return float(value)


def check_search_mode(value: Any, default: str) -> SearchMode:
    """A per-request search mode, or the configured one (MEMVAULT_SEARCH) when None."""
    if value is None:
        value = default
    try:
        return SearchMode(value)
    except ValueError:
        raise InvalidInput(
            f"search_mode must be one of {', '.join(m.value for m in SearchMode)}, got {value!r}",
            hint="omit it to use the server's MEMVAULT_SEARCH (hybrid by default)",
        ) from None


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """mem0 accepts a string, one message dict or a list of message dicts."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    elif isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a string, a message object or a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise InvalidInput(f"at most {MAX_MESSAGES} messages per call, got {len(messages)}")
    result = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidInput(f"messages[{position}] must be an object with role and content")
        role = message.get("role", "user")
        if role not in ("user", "assistant", "system", "tool"):
            raise InvalidInput(
                f"messages[{position}].role must be user, assistant, system or tool, got {role!r}"
            )
        content = check_text(message.get("content"), f"messages[{position}].content")
        name = check_label(message.get("name"), f"messages[{position}].name")
        result.append({"role": role, "content": content, "name": name})
    return result
