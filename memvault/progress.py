"""A tiny progress protocol so that long jobs can drive a Rich bar without knowing about it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Advance = Callable[[int], None]


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> Advance: ...


class NoProgress:
    def task(self, description: str, total: int | None) -> Advance:
        return lambda n: None
