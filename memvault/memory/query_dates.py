"""Dates a search query names ("on October 24, 2023", "in May", "last year"), matched
against when each memory was made (its created_at: mem0's `timestamp` of an add, or the
moment it was stored).

Only explicit calendar words count: a month needs a day or a year beside it or a preposition
before it ("in May", "early June"), so "Melanie may go" names no date. Relative words are
read against a reference day (today unless the caller says otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_SHORT = {name[:3]: number for number, name in enumerate(_MONTHS, 1)}
_MONTH = r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|" \
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"((?:19|20)\d\d)"
_MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH}\.? {_DAY},? {_YEAR}\b")
_DAY_MONTH_YEAR = re.compile(rf"\b{_DAY} (?:of )?{_MONTH},? {_YEAR}\b")
_MONTH_YEAR = re.compile(rf"\b{_MONTH},? (?:of )?{_YEAR}\b")
_IN_MONTH = re.compile(rf"\b(?:in|during|since|early|mid|late|of|beginning of|end of) "
                       rf"{_MONTH}\b")
_YEAR_ALONE = re.compile(rf"\b{_YEAR}\b")
_RELATIVE = re.compile(r"\b(today|yesterday|(?:last|this) (?:month|year))\b")


@dataclass(frozen=True)
class DateMention:
    """A date named by a query: every field given must match (a month without a year
    matches that month of any year)."""

    year: int | None = None
    month: int | None = None
    day: int | None = None

    def matches(self, when: date) -> bool:
        return ((self.year is None or when.year == self.year)
                and (self.month is None or when.month == self.month)
                and (self.day is None or when.day == self.day))


def _month(word: str) -> int:
    return _SHORT[word[:3]]


def _day(year: int, month: int, day: int) -> DateMention | None:
    try:
        date(year, month, day)
    except ValueError:  # "February 30, 2023": a typo names no date
        return None
    return DateMention(year, month, day)


def mentioned_dates(query: str, today: date | None = None) -> list[DateMention]:
    """The dates `query` names, the most precise form found (a full date, else a month of a
    year, else a month, else a year); relative words against `today` (UTC today if None)."""
    text = " ".join(query.casefold().split())
    found = [_day(int(m[3]), _month(m[1]), int(m[2])) for m in _MONTH_DAY_YEAR.finditer(text)]
    found += [_day(int(m[3]), _month(m[2]), int(m[1])) for m in _DAY_MONTH_YEAR.finditer(text)]
    mentions = [m for m in found if m is not None]
    if not mentions:
        mentions = [DateMention(int(m[2]), _month(m[1])) for m in _MONTH_YEAR.finditer(text)]
    if not mentions:
        mentions = [DateMention(month=_month(m[1])) for m in _IN_MONTH.finditer(text)]
    if not mentions:
        mentions = [DateMention(int(m[1])) for m in _YEAR_ALONE.finditer(text)]
    reference = today or datetime.now(UTC).date()
    for match in _RELATIVE.finditer(text):
        mentions.append(_relative(match[1], reference))
    return list(dict.fromkeys(mentions))


def _relative(phrase: str, today: date) -> DateMention:
    if phrase in ("today", "yesterday"):
        day = today - timedelta(days=phrase == "yesterday")
        return DateMention(day.year, day.month, day.day)
    if phrase == "this year":
        return DateMention(today.year)
    if phrase == "last year":
        return DateMention(today.year - 1)
    if phrase == "this month":
        return DateMention(today.year, today.month)
    previous = today.replace(day=1) - timedelta(days=1)  # "last month"
    return DateMention(previous.year, previous.month)


def made_on(created_at: str) -> date | None:
    """The day of an ISO-8601 created_at (None for a value that is not one)."""
    try:
        return date.fromisoformat(created_at[:10])
    except ValueError:
        return None
