"""mem0 2.x's temporal parameters: `add(timestamp=...)` dates a memory (mem0's platform:
"Unix timestamp for the memory"), `search(reference_date=...)` searches as of a date.

mem0's open-source `Memory` raises ValueError for both ("platform-only"); its platform client
sends them. memvault gives them one meaning on every surface (Memory, REST, the platform API,
MemoryClient):
- timestamp: the memory's `created_at` (and `updated_at`), e.g. when importing an old
  conversation; with infer=True also the date the extraction prompt gives the conversation.
- reference_date: what the store looked like on that date: memories created after it are left
  out, and expiry is judged on that date; relative words in the query ("last year", "yesterday")
  count from it when hybrid search ranks memories made on the days they name
  (memory/query_dates.py).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from memvault.errors import InvalidInput
from memvault.store.filters import Bool, Cond, Node

# A memory dated later than this ahead of the clock is refused: nothing is remembered from the
# future, and a far-future created_at would sort first in every listing for ever.
MAX_CLOCK_SKEW = timedelta(minutes=5)
_FORMS = "Unix seconds (e.g. 1767225600), YYYY-MM-DD, or ISO-8601 with an offset"


def _instant(value: Any, field: str) -> datetime:
    """A point in time from Unix seconds, an ISO-8601 string with offset, a date (its start,
    UTC) or an aware datetime."""
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be {_FORMS}, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"{field} must be a non-negative finite number of Unix "
                               f"seconds, got {value!r}")
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidInput(f"{field} {value!r} is out of range",
                               hint=f"give {_FORMS}") from None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if _is_day(text):
                return datetime.combine(date.fromisoformat(text), time(), UTC)
            moment = datetime.fromisoformat(text)
        except ValueError:
            if text.isdigit():
                return _instant(int(text), field)
            raise InvalidInput(f"{field} must be {_FORMS}, got {value[:40]!r}") from None
    else:
        raise InvalidInput(f"{field} must be {_FORMS}, got {type(value).__name__}")
    if moment.tzinfo is None:
        raise InvalidInput(f"{field} {str(value)[:40]!r} has no UTC offset",
                           hint="add one, e.g. 2026-01-02T10:00:00+00:00, or pass Unix seconds")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise InvalidInput(f"{field} {str(value)[:40]!r} is out of range",
                           hint=f"give {_FORMS}") from None


def _is_day(value: Any) -> bool:
    """A whole day (a date, or YYYY-MM-DD), not an instant."""
    if isinstance(value, str):
        return len(value.strip()) == 10 and not value.strip().isdigit()
    return isinstance(value, date) and not isinstance(value, datetime)


def check_timestamp(value: Any) -> str | None:
    """add's `timestamp` as the memory's created_at (store format), or None."""
    if value is None:
        return None
    moment = _instant(value, "timestamp")
    if moment > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise InvalidInput(f"timestamp {moment.isoformat()} is in the future",
                           hint="timestamp dates a memory from the past; omit it for now")
    return moment.isoformat(timespec="microseconds")


def reference_day(reference_date: Any) -> date | None:
    """The UTC day of `reference_date` (None: none given), the day relative words count from."""
    if reference_date is None:
        return None
    return _instant(reference_date, "reference_date").date()


def as_of(reference_date: Any, show_expired: bool) -> Node | None:
    """The filter that makes a search see the store as on `reference_date` (a date: through
    its end), or None. With show_expired, expiry is not applied at all."""
    if reference_date is None:
        return None
    moment = _instant(reference_date, "reference_date")
    if _is_day(reference_date):
        moment += timedelta(days=1, microseconds=-1)
    created = Cond("created_at", "lte", moment.isoformat(timespec="microseconds"))
    if show_expired:
        return created
    day = moment.date().isoformat()
    # expiration_date is a day: a memory is still valid on its expiration day (as the store's
    # own expiry rule: expiration_date >= today).
    unexpired = Bool("OR", (Cond("expiration_date", "gte", day),
                            Bool("NOT", (Cond("expiration_date", "exists"),))))
    return Bool("AND", (created, unexpired))
