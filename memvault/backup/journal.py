"""Continuous journal shipping: segments of journal entries chained by seq and by checksum.

Each segment covers (after_seq, upto_seq] completely and names the sha256 of the segment before
it, so a missing segment (gap) or a replaced one (broken chain) is detected on verify and
restore. Journal seqs themselves may skip numbers (advance_seq); coverage is what is chained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from memvault.backup import layout, metrics
from memvault.backup.catalog import list_backups
from memvault.backup.crypto import Cipher, cipher_for
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.errors import BackupCorrupt
from memvault.backup.format import VALID, encode_bytes, iter_lines, read_plain
from memvault.errors import MemvaultError
from memvault.store.records import JournalEntry, utc_now

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.store import Store

log = logging.getLogger("memvault.backup.journal")
SEGMENT_MAX_ENTRIES = 10_000
SEGMENT_HEADER = "memvault_journal_segment"


@dataclass
class SegmentRef:
    key: str
    after_seq: int
    upto_seq: int


@dataclass
class Segment:
    ref: SegmentRef
    sha256: str
    header: dict[str, Any]
    entries: list[JournalEntry]


def list_segments(dest: Destination, lineage_id: str) -> list[SegmentRef]:
    """The lineage's segments in seq order: format 2 (`lineages/<l>/journal/`) merged with
    format 1 (`journal/<l>/`), so a chain may continue across the layout change."""
    refs = []
    for prefix in (layout.journal_prefix(lineage_id), layout.legacy_journal_prefix(lineage_id)):
        for key in dest.list(prefix):
            match = layout.SEGMENT_NAME_RE.match(key.rsplit("/", 1)[-1])
            if match and key == prefix + key.rsplit("/", 1)[-1]:
                refs.append(SegmentRef(key, int(match.group(1)), int(match.group(2))))
    refs.sort(key=lambda r: (r.after_seq, r.upto_seq))
    return refs


def read_segment(dest: Destination, ref: SegmentRef, cipher: Cipher | None) -> Segment:
    stored = dest.read_bytes(ref.key)
    sha = hashlib.sha256(stored).hexdigest()
    encrypted = stored.startswith(b"MVENC")

    lines = iter_lines(read_plain([stored], ref.key, cipher, None, encrypted))
    try:
        header = json.loads(next(lines))[SEGMENT_HEADER]
        entries = [JournalEntry(**json.loads(line)) for line in lines]
    except (StopIteration, ValueError, KeyError, TypeError) as exc:
        raise BackupCorrupt(f"journal segment {ref.key} is not readable: {exc}",
                            file=ref.key) from None
    if (header.get("after_seq"), header.get("upto_seq")) != (ref.after_seq, ref.upto_seq):
        raise BackupCorrupt(f"journal segment {ref.key} header covers ({header.get('after_seq')},"
                            f" {header.get('upto_seq')}], not what its name says", file=ref.key)
    if len(entries) != header.get("count"):
        raise BackupCorrupt(f"journal segment {ref.key} holds {len(entries)} entries, its header "
                            f"says {header.get('count')}", file=ref.key)
    for entry in entries:
        if not ref.after_seq < entry.seq <= ref.upto_seq:
            raise BackupCorrupt(f"journal segment {ref.key} holds seq {entry.seq} outside its "
                                "range", file=ref.key)
    return Segment(ref, sha, header, entries)


@dataclass
class Chain:
    """Segments that continue a snapshot at `start_seq` without a gap, and where they stop."""

    start_seq: int
    segments: list[Segment]
    faults: list[str]

    @property
    def upto_seq(self) -> int:
        return self.segments[-1].ref.upto_seq if self.segments else self.start_seq

    def entries(self, until: datetime | None = None) -> list[JournalEntry]:
        out = []
        for segment in self.segments:
            for entry in segment.entries:
                if entry.seq <= self.start_seq:
                    continue
                if until is not None and datetime.fromisoformat(entry.ts) > until:
                    return out
                out.append(entry)
        return out


def follow_chain(dest: Destination, lineage_id: str, start_seq: int, cipher: Cipher | None,
                 refs: list[SegmentRef] | None = None) -> Chain:
    """Walk the segments after start_seq; stop (with a fault) at a gap or a broken link."""
    refs = refs if refs is not None else list_segments(dest, lineage_id)
    chain = Chain(start_seq, [], [])
    covered = start_seq
    previous: Segment | None = None
    pending = [r for r in refs if r.upto_seq > start_seq]
    for ref in pending:
        if ref.after_seq > covered:
            chain.faults.append(f"journal gap: seqs ({covered}, {ref.after_seq}] are missing "
                                f"before {ref.key}")
            break
        if ref.upto_seq <= covered:
            continue  # an overlapping older segment: already covered
        try:
            segment = read_segment(dest, ref, cipher)
        except BackupCorrupt as exc:
            chain.faults.append(str(exc))
            break
        if previous is not None and segment.header.get("prev_sha256") != previous.sha256:
            chain.faults.append(
                f"journal chain broken at {ref.key}: it names previous sha256 "
                f"{segment.header.get('prev_sha256')}, but {previous.ref.key} has "
                f"{previous.sha256}")
            break
        chain.segments.append(segment)
        previous = segment
        covered = ref.upto_seq
    return chain


class JournalShipper:
    """Ships new journal entries to every destination; each keeps its own chain tip."""

    def __init__(self, store: Store, settings: Settings,
                 destinations: list[Destination] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.destinations = destinations if destinations is not None \
            else open_destinations(settings)
        secret = settings.backup_encryption_key
        self.cipher = cipher_for(secret.get_secret_value() if secret else None)
        self._tips: dict[tuple[str, str], tuple[int, str | None]] = {}
        self._lock = threading.Lock()
        self._caught_up_at = time.time()
        self.last_error: str | None = None
        self.last_shipped_at: str | None = None

    def lag_seconds(self) -> float:
        """How long entries have waited because shipping fails (0 while it succeeds)."""
        return time.time() - self._caught_up_at if self.last_error else 0.0

    def _tip(self, dest: Destination, lineage_id: str) -> tuple[int, str | None]:
        """(upto_seq, sha256) of the newest segment, or where shipping starts for a new chain."""
        cached = self._tips.get((dest.url, lineage_id))
        if cached is not None:
            return cached
        refs = list_segments(dest, lineage_id)
        if refs:
            last = max(refs, key=lambda r: r.upto_seq)
            tip: tuple[int, str | None] = (
                last.upto_seq, hashlib.sha256(dest.read_bytes(last.key)).hexdigest())
        else:
            # A new chain starts at the newest valid snapshot of this lineage (what a restore
            # starts from); without one, at the very beginning of the journal.
            seqs = [e.manifest.seq for e in list_backups(dest) if e.status == VALID
                    and e.manifest and e.manifest.lineage_id == lineage_id]
            tip = (max(seqs) if seqs else 0, None)
        self._tips[(dest.url, lineage_id)] = tip
        return tip

    def ship(self) -> int:
        """Ship everything new to every destination; returns the number of segments written.
        A failing destination is logged and retried on the next call; raises nothing."""
        with self._lock:
            lineage_id = self.store.meta().lineage_id
            store_id = self.store.meta().store_id
            shipped = 0
            errors = []
            for dest in self.destinations:
                try:
                    shipped += self._ship_to(dest, lineage_id, store_id)
                except MemvaultError as exc:
                    self._tips.pop((dest.url, lineage_id), None)
                    errors.append(f"{dest.url}: {exc}")
                    metrics.journal_segments.labels("failed").inc()
                    log.error("journal shipping to %s failed: %s", dest, exc)
            self.last_error = "; ".join(errors) or None
            if errors:
                metrics.journal_lag.set(time.time() - self._caught_up_at)
            else:
                self._caught_up_at = time.time()
                metrics.journal_lag.set(0)
            return shipped

    def _ship_to(self, dest: Destination, lineage_id: str, store_id: str) -> int:
        shipped = 0
        while True:
            upto, prev_sha = self._tip(dest, lineage_id)
            entries = self.store.journal(upto, SEGMENT_MAX_ENTRIES)
            if not entries:
                return shipped
            last = entries[-1].seq
            header = {SEGMENT_HEADER: {
                "format_version": 1, "lineage_id": lineage_id, "store_id": store_id,
                "after_seq": upto, "upto_seq": last, "count": len(entries),
                "first_ts": entries[0].ts, "last_ts": entries[-1].ts,
                "prev_sha256": prev_sha, "created_at": utc_now(),
                "encrypted": self.cipher is not None}}
            lines = [json.dumps(header, separators=(",", ":"))]
            lines += [json.dumps(e.to_dict(), ensure_ascii=False, separators=(",", ":"))
                      for e in entries]
            stored = encode_bytes(("\n".join(lines) + "\n").encode("utf-8"), self.cipher)
            dest.put_bytes(layout.segment_key(lineage_id, upto, last), stored)
            self._tips[(dest.url, lineage_id)] = (last, hashlib.sha256(stored).hexdigest())
            self.last_shipped_at = utc_now()
            metrics.journal_segments.labels("shipped").inc()
            log.info("shipped journal (%d, %d] (%d entries) to %s", upto, last, len(entries),
                     dest)
            shipped += 1
