"""mem0's filter language: parse once into a small tree, then compile it to SQL or evaluate it.

Semantics, identical in every backend and in the Python reference evaluator:
- a condition on a missing key is false, except `ne` and `nin`, which are true;
- values only match values of the same kind (number, string, boolean): 1 never equals "1";
- `NOT: [a, b]` means neither a nor b;
- `{"key": "*"}` means the key is present and not null.

Limits (documented in docs/api.md; over them a filter is refused with InvalidInput naming the
limit, never sent to the database): MAX_IN_VALUES values per `in`/`nin`, MAX_CONDITIONS
conditions in all, MAX_FILTER_VALUES values in all, MAX_DEPTH levels of AND/OR/NOT. Within
them every backend answers (see filter_sql.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from memvault.errors import InvalidInput
from memvault.store.records import ENTITY_KEYS, MemoryRecord

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "icontains")
LOGICAL = ("AND", "OR", "NOT")
# Keys stored as columns; every other key is looked up in the caller's metadata.
COLUMN_KEYS = (*ENTITY_KEYS, "actor_id", "role", "memory_type", "created_at", "updated_at",
               "expiration_date", "hash", "id")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
MAX_IN_VALUES = 1000
MAX_DEPTH = 16
MAX_CONDITIONS = 2000
MAX_FILTER_VALUES = 100_000
INT64 = 2**63
# What entity_constraints pins when a filter asks one key for two different ids: no row holds
# it (ids cannot contain NUL), so nothing matches.
NO_ENTITY = "\x00conflict"


@dataclass(frozen=True)
class Cond:
    key: str
    op: str  # one of OPERATORS, or "exists"
    value: Any = None


@dataclass(frozen=True)
class Bool:
    op: str  # AND | OR | NOT
    items: tuple[Node, ...]


Node = Cond | Bool


def parse_filters(filters: Any) -> Node | None:
    """Validate and parse a mem0 filter dict; None or {} means no filter."""
    if filters is None:
        return None
    node = _parse_object(filters, depth=0)
    if isinstance(node, Bool) and node.op == "AND" and not node.items:
        return None
    _check_size(node)
    return node


def _check_size(node: Node) -> None:
    conditions = values = 0
    pending: list[Node] = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, Bool):
            pending.extend(item.items)
            continue
        conditions += 1
        values += len(item.value) if item.op in ("in", "nin") else 1
    if conditions > MAX_CONDITIONS:
        raise InvalidInput(f"the filter has {conditions} conditions, over the limit of "
                           f"{MAX_CONDITIONS}", hint="split the query, or use one `in` list "
                           "per key instead of many equalities")
    if values > MAX_FILTER_VALUES:
        raise InvalidInput(f"the filter holds {values} values, over the limit of "
                           f"{MAX_FILTER_VALUES}", hint="split the query into several")


def _parse_object(obj: Any, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"filters nest deeper than {MAX_DEPTH} levels")
    if not isinstance(obj, dict):
        raise InvalidInput(
            f"a filter must be an object like {{'key': value}}, got {type(obj).__name__}"
        )
    items: list[Node] = []
    for key, value in obj.items():
        if key in LOGICAL:
            items.append(_parse_logical(key, value, depth))
        elif value is None:
            # mem0 callers often pass {"agent_id": None}: an absent constraint, not a test.
            continue
        else:
            items.append(_parse_key(key, value))
    return items[0] if len(items) == 1 else Bool("AND", tuple(items))


def _parse_logical(op: str, value: Any, depth: int) -> Node:
    subs = value if isinstance(value, list) else [value]
    if not subs:
        raise InvalidInput(f"{op} needs a non-empty list of filters")
    return Bool(op, tuple(_parse_object(sub, depth + 1) for sub in subs))


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidInput(
            f"invalid filter key {key!r}: keys are 1-128 characters of letters, digits, _ . -"
        )
    if key.upper() in LOGICAL and key not in LOGICAL:
        raise InvalidInput(f"logical operators are upper case: use {key.upper()!r}")
    return key


def _parse_key(key: Any, value: Any) -> Node:
    key = _check_key(key)
    if value == "*":
        return Cond(key, "exists")
    if isinstance(value, list):
        return Cond(key, "in", _check_list(key, "in", value))
    if isinstance(value, dict):
        if not value:
            raise InvalidInput(f"filter on {key!r} has an empty operator object")
        conds = [_parse_op(key, op, operand) for op, operand in value.items()]
        return conds[0] if len(conds) == 1 else Bool("AND", tuple(conds))
    return Cond(key, "eq", _check_scalar(key, "eq", value))


def _parse_op(key: str, op: Any, operand: Any) -> Cond:
    if op not in OPERATORS:
        raise InvalidInput(
            f"unknown filter operator {op!r} on {key!r}; expected one of {', '.join(OPERATORS)}"
        )
    if op in ("in", "nin"):
        return Cond(key, op, _check_list(key, op, operand))
    if op in ("contains", "icontains"):
        if not isinstance(operand, str):
            raise InvalidInput(f"{op} on {key!r} needs a string, got {type(operand).__name__}")
        return Cond(key, op, operand)
    scalar = _check_scalar(key, op, operand)
    if op in ("gt", "gte", "lt", "lte") and isinstance(scalar, bool):
        raise InvalidInput(f"{op} on {key!r} needs a number or a string, not a boolean")
    return Cond(key, op, scalar)


def _check_list(key: str, op: str, values: Any) -> tuple[Any, ...]:
    if not isinstance(values, list | tuple) or not values:
        raise InvalidInput(f"{op} on {key!r} needs a non-empty list")
    if len(values) > MAX_IN_VALUES:
        raise InvalidInput(f"{op} on {key!r} has more than {MAX_IN_VALUES} values (the limit "
                           "per list)", hint="split the list over several requests")
    return tuple(_check_scalar(key, op, v) for v in values)


def _check_scalar(key: str, op: str, value: Any) -> Any:
    if isinstance(value, bool):
        if key in COLUMN_KEYS:
            raise InvalidInput(f"{key!r} holds text; {op} needs a string, got a boolean")
        return value
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise InvalidInput(f"{op} on {key!r}: integer {value} is out of the 64-bit range")
        if key in COLUMN_KEYS:
            raise InvalidInput(f"{key!r} holds text; {op} needs a string, got a number")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{op} on {key!r}: {value} is not a finite number")
        if key in COLUMN_KEYS:
            raise InvalidInput(f"{key!r} holds text; {op} needs a string, got a number")
        return value
    if isinstance(value, str):
        _check_text(value)
        return value
    raise InvalidInput(
        f"{op} on {key!r} needs a string, number or boolean, got {type(value).__name__}"
    )


def _check_text(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("filter value is not valid UTF-8 text (lone surrogate)") from None


def entity_constraints(node: Node | None) -> dict[str, str]:
    """The user/agent/run ids a filter pins with equality in its top-level AND, nested ANDs
    included (a search narrows by them first: the SQLite index block, the PostgreSQL scope
    columns of `vectors`). Two different values pinned for one key give NO_ENTITY."""
    pinned: dict[str, str] = {}
    for item in _conjuncts(node):
        if isinstance(item, Cond) and item.key in ENTITY_KEYS and item.op == "eq":
            if item.key in pinned and pinned[item.key] != item.value:
                pinned[item.key] = NO_ENTITY
            else:
                pinned[item.key] = item.value
    return pinned


def _conjuncts(node: Node | None) -> list[Node]:
    """The conditions a filter ANDs together, nested ANDs pulled up."""
    found: list[Node] = []
    pending = [] if node is None else [node]
    while pending:
        item = pending.pop()
        if isinstance(item, Bool) and item.op == "AND":
            pending.extend(reversed(item.items))
        else:
            found.append(item)
    return found


def only_entity_constraints(node: Node | None) -> bool:
    """True when the filter is nothing but entity equalities (no SQL needed to apply it)."""
    return all(isinstance(i, Cond) and i.key in ENTITY_KEYS and i.op == "eq"
               for i in _conjuncts(node))


# ---------------------------------------------------------------- Python reference evaluator

_MISSING = object()


def value_kind(value: Any) -> str | None:
    """The kind a value compares as: bool, number or text (None for anything else)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


def _lookup(record: MemoryRecord, key: str) -> Any:
    if key in COLUMN_KEYS:
        value = getattr(record, key)
        return _MISSING if value is None else value
    metadata = record.metadata or {}
    return metadata.get(key, _MISSING)


def evaluate(node: Node | None, record: MemoryRecord) -> bool:
    """The reference semantics; backends' SQL must agree with this (property-tested)."""
    if node is None:
        return True
    if isinstance(node, Bool):
        results = (evaluate(item, record) for item in node.items)
        if node.op == "AND":
            return all(results)
        if node.op == "OR":
            return any(results)
        return not any(results)
    value = _lookup(record, node.key)
    op = node.op
    if op == "exists":
        return value is not _MISSING and value is not None
    if op == "ne":
        return not _eq(value, node.value)
    if op == "nin":
        return not any(_eq(value, v) for v in node.value)
    if op == "eq":
        return _eq(value, node.value)
    if op == "in":
        return any(_eq(value, v) for v in node.value)
    if op in ("contains", "icontains"):
        if value_kind(value) != "text":
            return False
        if op == "contains":
            return node.value in value
        return node.value.lower() in value.lower()
    if value_kind(value) is None or value_kind(value) != value_kind(node.value):
        return False
    return {
        "gt": value > node.value,
        "gte": value >= node.value,
        "lt": value < node.value,
        "lte": value <= node.value,
    }[op]


def _eq(value: Any, expected: Any) -> bool:
    kind = value_kind(value)
    return kind is not None and kind == value_kind(expected) and value == expected


