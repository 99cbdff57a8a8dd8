"""Filters compiled to SQL for each backend; the Python reference evaluator in filters.py
defines what they must mean (property-tested against each other).

Within the limits filters.py enforces, every backend answers: `in` lists compile to one array
parameter (SQLite `json_each`, PostgreSQL `= ANY`) and long AND/OR chains to balanced trees, so
no filter reaches SQLite's expression-depth limit (1000) or PostgreSQL's parameter limit.
"""

from __future__ import annotations

import json
from typing import Any

from memvault.store.filters import COLUMN_KEYS, Bool, Cond, Node, value_kind


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
        return f"({d.column(node.key)} IS NOT NULL AND {sql})"
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
        # Never NULL, as COALESCE(..., false) would be, yet an index on the column and its
        # statistics serve it: the planner sees how few rows a user's filter leaves.
        return f"({col} IS NOT NULL AND {col} {sql_op} {d.p})"
    if op == "exists":
        return f"({d.present(node.key)})"
    if op in ("contains", "icontains"):
        value = d.value(node.key, "text")
        hay, needle = (value, d.p) if op == "contains" else (d.lower(value), d.lower(d.p))
        params.append(node.value)
        return f"COALESCE({d.kind_is(node.key, 'text')} AND {d.contains(hay, needle)}, {false})"
    kind = value_kind(node.value)
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
