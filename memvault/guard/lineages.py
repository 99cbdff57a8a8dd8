"""Every lineage in the backup destinations, whether its writer is alive, and which one a store
is to be compared with.

Several stores may share a destination (staging pointed at prod's MEMVAULT_BACKUP_URLS, or
every PostgreSQL instance run from one data dir writing `<data_dir>/backups`): each writes
only under its own lineage's prefix. A store compares itself with its own lineage's ledger. A
store with no record of its own lineage (a fresh or new database) looks at the others: one
whose writer is alive is another store at work (`DestinationShared`, never restored from); a
single one whose writer is gone and that holds data is the store this one replaces (compared,
and restored from when empty); several such are ambiguous (named, never restored from).

A writer is alive when its head's `beat` moves between two reads (clocks are never compared);
a head marked `stopped` is gone at once; one that does not move within `decide_after` seconds
is gone too. Lineages are found by listing and by GET (the destination marker names every
lineage that ever wrote there): a lineage that a GET proves exists but no listing shows makes
the ledger unknown, never empty.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from memvault.backup.catalog import BackupEntry, list_backups
from memvault.backup.destinations import Destination
from memvault.backup.head import LineageHead, read_head, read_marker
from memvault.backup.layout import LINEAGES, RecordKind, legacy_records_prefix, lineage_of
from memvault.errors import MemvaultError
from memvault.guard.alerts import Alert
from memvault.guard.checks import Finding, Observation
from memvault.guard.ledger import LedgerRecord, LedgerUnavailable, read_ledger

log = logging.getLogger("memvault.guard")


# The ledger `backend` of a lineage written by `memvault watch mem0` (memvault/watch/).
WATCHED_MEM0 = "mem0-pgvector"


class Liveness(StrEnum):
    LIVE = "live"
    GONE = "gone"
    UNDECIDED = "undecided"


@dataclass
class LineageState:
    """One lineage as the destinations show it."""

    lineage_id: str
    heads: dict[str, LineageHead] = field(default_factory=dict)  # destination url -> head
    listed_in: set[str] = field(default_factory=set)  # destinations whose listing shows it
    named_in: set[str] = field(default_factory=set)  # destinations whose marker names it
    record: LedgerRecord | None = None

    @property
    def has_data(self) -> bool:
        if self.record is not None and self.record.has_data:
            return True
        return any(h.journal_upto > 0 or (h.memories or 0) > 0 for h in self.heads.values())

    def writer(self) -> str:
        """Who writes it, for people: host, pid and store of its newest head."""
        if not self.heads:
            return f"lineage {self.lineage_id} (no head: no writer heartbeat known)"
        head = max(self.heads.values(), key=lambda h: h.beat)
        return (f"lineage {self.lineage_id} (store {head.store_id}, host {head.host}, "
                f"pid {head.pid})")


@dataclass
class Survey:
    lineages: dict[str, LineageState]
    problems: list[str]
    unknown: str | None = None  # why the ledger cannot be known from these listings


def survey(destinations: list[Destination], own_lineage: str) -> Survey:
    """Read every lineage the destinations hold or name: listing, marker and heads (GET), and
    each lineage's ledger. Raises LedgerUnavailable when no destination answers."""
    states: dict[str, LineageState] = {}
    problems: list[str] = []
    backups: dict[str, list[BackupEntry]] = {}
    failed = 0

    def state(lineage_id: str) -> LineageState:
        return states.setdefault(lineage_id, LineageState(lineage_id))

    for dest in destinations:
        try:
            listed = {lineage_of(k) for k in dest.list(f"{LINEAGES}/")} - {None}
            for key in dest.list(legacy_records_prefix(RecordKind.LEDGER)):
                listed.add(_legacy_lineage(dest, key))
            backups[dest.url] = list_backups(dest)
            for entry in backups[dest.url]:
                if entry.manifest is not None:
                    listed.add(entry.manifest.lineage_id)
            named = set(read_marker(dest))
        except (MemvaultError, OSError) as exc:
            failed += 1
            problems.append(f"cannot survey {dest.url}: {exc}")
            continue
        for lineage_id in listed - {None, ""}:
            state(str(lineage_id)).listed_in.add(dest.url)
        for lineage_id in named:
            state(lineage_id).named_in.add(dest.url)
        state(own_lineage)
        for lineage_id, st in states.items():
            try:
                head = read_head(dest, lineage_id)
            except (MemvaultError, OSError) as exc:
                problems.append(f"cannot read the head of {lineage_id} in {dest.url}: {exc}")
                continue
            if head is not None:
                st.heads[dest.url] = head
    if destinations and failed == len(destinations):
        raise LedgerUnavailable("no backup destination answers: " + "; ".join(problems),
                                hint="check MEMVAULT_BACKUP_URLS (mounted? credentials?); "
                                "until one answers, the guard cannot tell this store from a "
                                "replaced one")
    result = Survey(states, problems)
    for lineage_id, st in list(states.items()):
        if not st.listed_in and not st.named_in and not st.heads:
            if lineage_id == own_lineage:
                continue  # nothing of this store's lineage anywhere yet: a first start
            del states[lineage_id]
            continue
        try:
            st.record, found = read_ledger(destinations, lineage_id, backups=backups)
            problems += found
        except LedgerUnavailable as exc:
            problems.append(exc.message)
        _compare_destinations(st, destinations, result)
    return result


def _legacy_lineage(dest: Destination, key: str) -> str | None:
    import json

    try:
        return str(json.loads(dest.read_bytes(key))["lineage_id"])
    except (MemvaultError, OSError, ValueError, TypeError, KeyError):
        return None


def _compare_destinations(st: LineageState, destinations: list[Destination],
                          result: Survey) -> None:
    """A lineage that a GET proves (the destination marker names it, or its head shows data)
    but a listing does not show: that listing is not the truth. When no destination lists a
    lineage whose head shows data, what the store should hold is unknown."""
    proven = set(st.named_in) | set(st.heads)
    missing = [d.url for d in destinations if d.url in proven and d.url not in st.listed_in]
    silent = [d.url for d in destinations if d.url not in st.listed_in]
    if st.listed_in and silent:
        result.problems.append(f"lineage {st.lineage_id} is listed in "
                               f"{', '.join(sorted(st.listed_in))} but not in "
                               f"{', '.join(silent)}")
    if not missing:
        return
    result.problems.append(
        f"{', '.join(missing)} names lineage {st.lineage_id} (marker or head, read by GET) "
        "but its listing shows nothing of it: the listing is incomplete")
    with_data = any(h.journal_upto > 0 or (h.memories or 0) > 0 for h in st.heads.values())
    if not st.listed_in and with_data:
        result.unknown = (
            f"the backup destinations hold lineage {st.lineage_id} (its head shows journal "
            "and memories) but no listing shows its ledger, backups or journal (an object "
            "store answering LIST with nothing?); what the store should hold is unknown until "
            "a listing shows them")


class LivenessWatch:
    """Tells whether a lineage's writer is alive from its head's beat over time. Keeps, per
    lineage and destination, the first (process, beat) seen and when (monotonic)."""

    def __init__(self, decide_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.decide_after = decide_after
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[str, int, float]] = {}

    def liveness(self, st: LineageState) -> Liveness:
        now = self.clock()
        verdict = Liveness.GONE
        for url, head in st.heads.items():
            if head.stopped:
                continue
            key = (st.lineage_id, url)
            first = self._seen.get(key)
            if first is None:
                first = self._seen[key] = (head.process, head.beat, now)
            if first[:2] != (head.process, head.beat):
                return Liveness.LIVE
            if now - first[2] < self.decide_after:
                verdict = Liveness.UNDECIDED
        return verdict


@dataclass
class Known:
    """Which ledger a store is compared with, and what else the destinations show."""

    ledger: LedgerRecord | None
    shared: Finding
    pending: str | None = None  # a lineage's liveness is not decided yet: wait, do nothing
    restore_lineage: str | None = None  # the lineage an empty store may be restored from
    ambiguous: list[LineageState] = field(default_factory=list)
    unknown: str | None = None  # a GET proves data that no listing shows: not ready
    unreadable: str | None = None  # no destination answers: never a first start, but served


def choose(obs: Observation, found: Survey, watch: LivenessWatch) -> Known:
    own = found.lineages.get(obs.lineage_id)
    others = [st for lid, st in sorted(found.lineages.items()) if lid != obs.lineage_id]
    states = {st.lineage_id: watch.liveness(st) for st in others}
    live = [st for st in others if states[st.lineage_id] is Liveness.LIVE]
    shared = Finding(Alert.DestinationShared, False,
                     "no other live store writes to the backup destinations")
    if live:
        shared = Finding(Alert.DestinationShared, True, (
            f"another store writes to the same backup destinations: "
            f"{'; '.join(st.writer() for st in live)}; this store is lineage {obs.lineage_id} "
            f"(store {obs.store_id}, {obs.location}). Each keeps to its own lineage; this "
            "store never restores from a live one"), {
                "lineages": [st.lineage_id for st in live], "own_lineage": obs.lineage_id,
                "hint": "give each store its own MEMVAULT_BACKUP_URLS unless sharing is "
                "intended; to take another store's data on purpose: `memvault restore "
                "<backup id> --yes` (see `memvault backup list`)"})
    if own is not None and own.record is not None:
        return Known(own.record, shared, unknown=found.unknown if not own.listed_in else None)
    if found.unknown:
        return Known(None, shared, unknown=found.unknown)
    # A watched mem0 table's lineage (`memvault watch mem0`) is never the store this one
    # replaces: its memories go back to mem0 (`restore --to-mem0`), not into memvault.
    with_data = [st for st in others if st.has_data and states[st.lineage_id] is not
                 Liveness.LIVE and not (st.record and st.record.backend == WATCHED_MEM0)]
    waiting = [st for st in with_data if states[st.lineage_id] is Liveness.UNDECIDED]
    if waiting:
        names = ", ".join(st.writer() for st in waiting)
        return Known(None, shared, pending=(
            f"waiting up to {watch.decide_after:.0f} s to see whether the writer of {names} is "
            "alive before comparing" if math.isfinite(watch.decide_after) else
            f"the head of {names} is not marked stopped: whether its writer is alive shows "
            "only over two reads"))
    if len(with_data) == 1:
        return Known(with_data[0].record, shared, restore_lineage=with_data[0].lineage_id)
    if len(with_data) > 1:
        return Known(None, shared, ambiguous=with_data)
    return Known(None, shared)
