"""mem0's filter language: parse once into a small tree, then compile it to SQL or evaluate it.

Semantics, identical in every backend and in the Python reference evaluator:
- a condition on a missing key is false, except `ne` and `nin`, which are true;
- values only match values of the same kind (number, string, boolean): 1 never equals "1";
- `NOT: [a, b]` means neither a nor b;
- `{"key": "*"}` means the key is present and not null.

Limits (documented in docs/api.md; over them a filter is refused with InvalidInput naming the
limit, never sent to the database): MAX_IN_VALUES values per `in`/`nin`, MAX_CONDITIONS
conditions in all, MAX_FILTER_VALUES values in all, MAX_DEPTH levels of AND/OR/NOT. Within
them every backend answers: `in` lists compile to one array parameter (SQLite `json_each`,
PostgreSQL `= ANY`) and long AND/OR chains to balanced trees, so no filter reaches SQLite's
expression-depth limit or PostgreSQL's parameter limit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
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
    """The user/agent/run ids a filter pins with top-level equality (used to pick index blocks)."""
    if node is None:
        return {}
    items = node.items if isinstance(node, Bool) and node.op == "AND" else (node,)
    pinned: dict[str, str] = {}
    for item in items:
        if isinstance(item, Cond) and item.key in ENTITY_KEYS and item.op == "eq":
            if item.key in pinned and pinned[item.key] != item.value:
                pinned[item.key] = "\x00conflict"  # matches nothing
            else:
                pinned[item.key] = item.value
    return pinned


def only_entity_constraints(node: Node | None) -> bool:
    """True when the filter is nothing but entity equalities (no SQL needed to apply it)."""
    if node is None:
        return True
    items = node.items if isinstance(node, Bool) and node.op == "AND" else (node,)
    return all(
        isinstance(i, Cond) and i.key in ENTITY_KEYS and i.op == "eq" for i in items
    )


# ---------------------------------------------------------------- Python reference evaluator

_MISSING = object()


def _kind(value: Any) -> str | None:
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
        if _kind(value) != "text":
            return False
        if op == "contains":
            return node.value in value
        return node.value.lower() in value.lower()
    if _kind(value) is None or _kind(value) != _kind(node.value):
        return False
    return {
        "gt": value > node.value,
        "gte": value >= node.value,
        "lt": value < node.value,
        "lte": value <= node.value,
    }[op]


def _eq(value: Any, expected: Any) -> bool:
    kind = _kind(value)
    return kind is not None and kind == _kind(expected) and value == expected


# ---------------------------------------------------------------- SQL compilation


class Dialect:
    """How one backend spells a typed metadata lookup. `p` is the parameter placeholder."""

    p = "?"

    def column(self, key: str) -> str:
        return f"m.{key}"

    def kind_is(self, key: str, kind: str) -> str:
        raise NotImplementedError

    def value(self, key: str, kind: str) -> str:
        raise NotImplementedError

    def present(self, key: str) -> str:
        raise NotImplementedError

    def lower(self, expr: str) -> str:
        raise NotImplementedError

    def contains(self, haystack: str, needle: str) -> str:
        raise NotImplementedError

    def one_of(self, expr: str, kind: str, values: list[Any]) -> tuple[str, Any]:
        """`expr` equals one of `values` (all of one kind: text, int or float), as SQL with ONE
        parameter whatever the list's length, and that parameter."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    p = "?"

    @staticmethod
    def _path(key: str) -> str:
        return "'$.\"" + key.replace("'", "''") + "\"'"

    def kind_is(self, key: str, kind: str) -> str:
        path = self._path(key)
        types = {"number": "('integer','real')", "text": "('text')", "bool": "('true','false')"}
        return f"json_type(m.metadata, {path}) IN {types[kind]}"

    def value(self, key: str, kind: str) -> str:
        return f"json_extract(m.metadata, {self._path(key)})"

    def present(self, key: str) -> str:
        return f"COALESCE(json_type(m.metadata, {self._path(key)}) NOT IN ('null'), 0)"

    def lower(self, expr: str) -> str:
        return f"mv_lower({expr})"  # Python's str.lower, registered on the connection

    def contains(self, haystack: str, needle: str) -> str:
        return f"instr({haystack}, {needle}) > 0"

    def one_of(self, expr: str, kind: str, values: list[Any]) -> tuple[str, Any]:
        # json_each yields TEXT for strings and INTEGER/REAL for numbers, compared as `=` does.
        return (f"{expr} IN (SELECT value FROM json_each({self.p}))",
                json.dumps(values, ensure_ascii=False))


class PostgresDialect(Dialect):
    """Metadata is a `json` column (kept verbatim, like SQLite's TEXT), text compares bytewise
    ("C" collation, as SQLite does) and lower() uses full Unicode case mapping where the server
    has it (PostgreSQL 18 `pg_unicode_fast`), which is what Python's str.lower does."""

    p = "%s"

    def __init__(self, casefold_collation: str | None = None) -> None:
        self.casefold_collation = casefold_collation

    @staticmethod
    def _field(key: str) -> str:
        return "'" + key.replace("'", "''").replace("%", "%%") + "'"

    def kind_is(self, key: str, kind: str) -> str:
        types = {"number": "'number'", "text": "'string'", "bool": "'boolean'"}
        return f"json_typeof(m.metadata -> {self._field(key)}) = {types[kind]}"

    def value(self, key: str, kind: str) -> str:
        text = f"(m.metadata ->> {self._field(key)})"
        if kind == "number":
            return f"(CASE WHEN {self.kind_is(key, 'number')} THEN {text}::numeric END)"
        if kind == "bool":
            return f"(CASE WHEN {self.kind_is(key, 'bool')} THEN {text}::boolean END)"
        return f"({text} COLLATE \"C\")"

    def present(self, key: str) -> str:
        return f"COALESCE(json_typeof(m.metadata -> {self._field(key)}) <> 'null', false)"

    def lower(self, expr: str) -> str:
        if self.casefold_collation is None:
            return f"lower({expr})"
        return f"lower(({expr})::text COLLATE {self.casefold_collation})"

    def contains(self, haystack: str, needle: str) -> str:
        return f"strpos({haystack}, {needle}) > 0"

    def one_of(self, expr: str, kind: str, values: list[Any]) -> tuple[str, Any]:
        # The array types `=` would use for one value: numeric for ints, float8 for floats.
        array = {"text": "text[]", "int": "numeric[]", "float": "float8[]"}[kind]
        return f"{expr} = ANY({self.p}::{array})", list(values)


def compile_sql(node: Node | None, dialect: Dialect) -> tuple[str, list[Any]]:
    """A WHERE fragment over the memories table aliased `m`, and its parameters."""
    if node is None:
        return ("1=1", [])
    params: list[Any] = []
    return _compile(node, dialect, params), params


# Terms joined per parenthesised group: SQLite nests `a OR b OR c ...` one level per term and
# stops at 1000 levels, so long chains are built as a balanced tree of small groups.
_GROUP = 8


def _join(parts: list[str], op: str) -> str:
    while len(parts) > _GROUP:
        parts = ["(" + f" {op} ".join(parts[i : i + _GROUP]) + ")"
                 for i in range(0, len(parts), _GROUP)]
    return "(" + f" {op} ".join(parts) + ")"


def _flatten(node: Bool) -> list[Node]:
    """The items of an AND/OR, with nested items of the same operator pulled up."""
    items: list[Node] = []
    for item in node.items:
        if isinstance(item, Bool) and item.op == node.op and node.op != "NOT":
            items.extend(_flatten(item))
        else:
            items.append(item)
    return items


def _compile_in(node: Cond, d: Dialect, params: list[Any]) -> str:
    """`key in values`, one array parameter per kind of value (the reference matches a value
    only against values of its own kind)."""
    false = "(1=0)"
    if node.key in COLUMN_KEYS:  # text columns, text values (checked when parsed)
        sql, param = d.one_of(d.column(node.key), "text", list(node.value))
        params.append(param)
        return f"COALESCE({sql}, {false})"
    groups: dict[str, list[Any]] = {}
    # Duplicates dropped by (type, value): 1, 1.0 and True are equal as dict keys.
    for kind_of, value in dict.fromkeys((type(v), v) for v in node.value):
        kind = {bool: "bool", int: "int", float: "float", str: "text"}[kind_of]
        groups.setdefault(kind, []).append(value)
    parts = []
    for kind, values in groups.items():
        if kind == "bool":
            parts.extend(_compile(Cond(node.key, "eq", v), d, params) for v in values)
            continue
        family = "text" if kind == "text" else "number"
        sql, param = d.one_of(d.value(node.key, family), kind, values)
        params.append(param)
        parts.append(f"COALESCE({d.kind_is(node.key, family)} AND {sql}, {false})")
    return _join(parts, "OR")


def _compile(node: Node, d: Dialect, params: list[Any]) -> str:
    false, true = "(1=0)", "(1=1)"
    if isinstance(node, Bool):
        parts = [_compile(item, d, params) for item in _flatten(node)]
        if node.op == "AND":
            return _join(parts, "AND") if parts else true
        joined = _join(parts, "OR") if parts else false
        return joined if node.op == "OR" else f"(NOT {joined})"
    op = node.op
    if op == "ne":
        return f"(NOT {_compile(Cond(node.key, 'eq', node.value), d, params)})"
    if op == "nin":
        return f"(NOT {_compile(Cond(node.key, 'in', node.value), d, params)})"
    if op == "in":
        return _compile_in(node, d, params)
    # Every leaf below yields true/false, never NULL, so NOT behaves as in the reference.
    if node.key in COLUMN_KEYS:
        col = d.column(node.key)
        if op == "exists":
            return f"({col} IS NOT NULL)"
        if op in ("contains", "icontains"):
            hay, needle = (col, d.p) if op == "contains" else (d.lower(col), d.lower(d.p))
            params.append(node.value)
            return f"COALESCE({d.contains(hay, needle)}, {false})"
        sql_op = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        params.append(node.value)
        return f"COALESCE({col} {sql_op} {d.p}, {false})"
    if op == "exists":
        return f"({d.present(node.key)})"
    if op in ("contains", "icontains"):
        value = d.value(node.key, "text")
        hay, needle = (value, d.p) if op == "contains" else (d.lower(value), d.lower(d.p))
        params.append(node.value)
        return f"COALESCE({d.kind_is(node.key, 'text')} AND {d.contains(hay, needle)}, {false})"
    kind = _kind(node.value)
    assert kind is not None
    sql_op = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    if kind == "bool":
        params.append(node.value)
        test = f"{d.kind_is(node.key, 'bool')} AND {d.value(node.key, 'bool')} = {d.p}"
        return f"COALESCE({test}, {false})"
    params.append(node.value)
    return (
        f"COALESCE({d.kind_is(node.key, kind)} AND {d.value(node.key, kind)} {sql_op} {d.p}, "
        f"{false})"
    )


SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()

Evaluator = Callable[[MemoryRecord], bool]
