"""Parsing of the human spellings used in configuration: durations and retention policies."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

DURATION_FORMS = "a number of seconds or a number with a unit: 500ms, 10s, 5m, 24h, 7d, 2w"


def parse_duration(value: str | int | float) -> float:
    """'24h' -> 86400.0. A bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration ({DURATION_FORMS}), got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration ({DURATION_FORMS}), got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds}s"


KEEP_BUCKETS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
KEEP_FORMS = "comma-separated bucket=count pairs, buckets among " + "/".join(KEEP_BUCKETS)


def parse_keep(value: str | dict[str, int]) -> dict[str, int]:
    """'last=7,daily=7' -> {'last': 7, 'daily': 7}."""
    if isinstance(value, dict):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"expected {KEEP_FORMS} (e.g. last=7,daily=7), got {value!r}")
            key, _, count = part.partition("=")
            items.append((key.strip(), count.strip()))
    policy: dict[str, int] = {}
    for key, count in items:
        if key not in KEEP_BUCKETS:
            raise ValueError(f"unknown retention bucket {key!r}; expected {KEEP_FORMS}")
        try:
            number = int(count)
        except (TypeError, ValueError):
            raise ValueError(
                f"retention count for {key!r} must be an integer, got {count!r}"
            ) from None
        if number < 0:
            raise ValueError(f"retention count for {key!r} must be >= 0, got {number}")
        policy[key] = number
    if not any(policy.values()):
        raise ValueError("a retention policy must keep at least one backup (e.g. last=7)")
    return policy
