"""The guard's two clocks, injectable for tests: wall time (stamps for people, the 24 h count
window, the digest hour) and monotonic time (every duration within the process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Clock:
    wall: Callable[[], datetime] = field(default=_wall)
    mono: Callable[[], float] = field(default=time.monotonic)


SYSTEM = Clock()
