"""JSON lines that hold whatever the API accepted, exactly.

orjson is fast but refuses integers beyond 64 bits (and strings with lone surrogates) when
writing, and silently turns such integers into floats when reading. Lines it cannot write are
written by the standard library (ASCII-escaped), and lines that may hold such an integer are
read by it, so a value always reads back as it was written.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# A run of 19 digits may be an integer outside orjson's exact range (-2**63 .. 2**64-1). It
# may also sit inside a string: reading that line the slow way is merely slower.
_MAYBE_BIG_INT = re.compile(rb"\d{19}")


class LineError(ValueError):
    def __init__(self, line: int, cause: Exception) -> None:
        super().__init__(f"line {line} is not valid JSON: {cause}")
        self.line = line


def dumps(value: Any) -> bytes:
    """One JSON value on one line (no newline): orjson, else the standard library."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        plain = value.to_dict() if hasattr(value, "to_dict") else value
        return json.dumps(plain, separators=(",", ":"), allow_nan=False).encode("ascii")


def loads(line: bytes) -> Any:
    """One JSON value, read exactly (big integers stay integers)."""
    if _MAYBE_BIG_INT.search(line):
        return json.loads(line)
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # e.g. an escaped lone surrogate: the stdlib reads it
        return json.loads(line)


def loads_lines(body: bytes) -> list[Any]:
    """Every line of `body` (one JSON value each, no blank lines). Raises LineError naming the
    first line that is not JSON."""
    if not body:
        return []
    if not _MAYBE_BIG_INT.search(body):
        try:  # lines never hold a raw newline, so they join into one array: one C-speed parse
            return list(orjson.loads(b"[" + body.replace(b"\n", b",") + b"]"))
        except orjson.JSONDecodeError:
            pass  # find the line (or read what only the stdlib reads) below
    rows = []
    for number, line in enumerate(body.split(b"\n"), 1):
        try:
            rows.append(loads(line))
        except ValueError as exc:
            raise LineError(number, exc) from None
    return rows
