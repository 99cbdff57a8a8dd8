"""Continuous journal shipping: segments of journal entries chained by seq and by checksum.

Each segment covers (after_seq, upto_seq] completely and names the sha256 of the segment before
it, so a missing segment (gap) or a replaced one (broken chain) is detected on verify and
restore. Journal seqs themselves may skip numbers (advance_seq); coverage is what is chained.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from memvault.backup import jsonlines, layout
from memvault.backup.crypto import Cipher
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupCorrupt, BackupError
from memvault.backup.format import iter_lines, read_plain
from memvault.backup.head import LineageHead
from memvault.store import JournalEntry

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
    """Read and check one segment on its own: tags (encrypted), zstd content checksums
    (required for format 2), its header against its name, its entries against its header."""
    stored = dest.read_bytes(ref.key)
    sha = hashlib.sha256(stored).hexdigest()
    encrypted = stored.startswith(b"MVENC")
    checksummed = ref.key.startswith(layout.LINEAGES + "/")
    lines = iter_lines(read_plain([stored], ref.key, cipher, None, encrypted,
                                  require_checksum=checksummed))
    try:
        header = jsonlines.loads(next(lines))[SEGMENT_HEADER]
        entries = [JournalEntry(**jsonlines.loads(line)) for line in lines]
    except StopIteration:
        raise BackupCorrupt(f"journal segment {ref.key} is empty", file=ref.key) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupCorrupt(f"journal segment {ref.key} is not readable: {exc}",
                            file=ref.key) from None
    if (header.get("after_seq"), header.get("upto_seq")) != (ref.after_seq, ref.upto_seq):
        raise BackupCorrupt(f"journal segment {ref.key} header covers ({header.get('after_seq')},"
                            f" {header.get('upto_seq')}], not what its name says", file=ref.key)
    if len(entries) != header.get("count"):
        raise BackupCorrupt(f"journal segment {ref.key} holds {len(entries)} entries, its header "
                            f"says {header.get('count')}", file=ref.key)
    seqs = [entry.seq for entry in entries]
    if seqs != sorted(set(seqs)) or any(not ref.after_seq < q <= ref.upto_seq for q in seqs):
        raise BackupCorrupt(f"journal segment {ref.key} holds seqs out of order or outside "
                            f"({ref.after_seq}, {ref.upto_seq}]", file=ref.key)
    if entries and entries[-1].seq != ref.upto_seq:
        raise BackupCorrupt(f"journal segment {ref.key} ends at seq {entries[-1].seq}, its name "
                            f"says {ref.upto_seq}", file=ref.key)
    return Segment(ref, sha, header, entries)


@dataclass
class ChainFault:
    """Why a chain stops (or is not to be trusted), naming the segment when one is at fault."""

    message: str
    file: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class Chain:
    """Segments that continue a snapshot at `start_seq` without a gap, where they stop, and
    what lies beyond (readable segments after the stop: known losses)."""

    start_seq: int
    segments: list[Segment]
    problems: list[ChainFault] = field(default_factory=list)
    beyond: list[Segment] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # segments inside covered ranges

    @property
    def faults(self) -> list[str]:
        return [p.message for p in self.problems]

    @property
    def upto_seq(self) -> int:
        return self.segments[-1].ref.upto_seq if self.segments else self.start_seq

    def all_entries(self) -> list[JournalEntry]:
        """Every entry after start_seq, in seq order, each seq once."""
        out: list[JournalEntry] = []
        last = self.start_seq
        for segment in self.segments:
            for entry in segment.entries:
                if entry.seq > last:
                    out.append(entry)
                    last = entry.seq
        return out

    def entries(self, until: datetime | None = None) -> list[JournalEntry]:
        """Entries to replay: all, or (point in time) every entry in seq order up to the last
        one stamped at or before `until`. An entry stamped later than a following one (a
        clock stepped back) does not end the replay early."""
        entries = self.all_entries()
        if until is None:
            return entries
        cut = 0
        for index, entry in enumerate(entries):
            if datetime.fromisoformat(entry.ts) <= until:
                cut = index + 1
        return entries[:cut]


def clock_steps_back(entries: list[JournalEntry]) -> list[dict[str, Any]]:
    """Each entry stamped earlier than the one before it (the writer's clock went back)."""
    steps = []
    for before, after in itertools.pairwise(entries):
        if datetime.fromisoformat(after.ts) < datetime.fromisoformat(before.ts):
            steps.append({"seq": after.seq, "ts": after.ts, "previous_seq": before.seq,
                          "previous_ts": before.ts})
    return steps


def follow_chain(dest: Destination, lineage_id: str, start_seq: int, cipher: Cipher | None,
                 refs: list[SegmentRef] | None = None, head: LineageHead | None = None
                 ) -> Chain:
    """Walk the segments after start_seq; stop (with a fault) at a gap, a damaged segment or a
    broken link. The segment ending at the head's `journal_upto` must have the head's sha256:
    the head vouches for the newest segment, which no later segment names."""
    refs = refs if refs is not None else list_segments(dest, lineage_id)
    chain = Chain(start_seq, [])
    covered = start_seq
    previous: Segment | None = None
    pending = [r for r in refs if r.upto_seq > start_seq]
    stopped_at = len(pending)
    for index, ref in enumerate(pending):
        if ref.after_seq > covered:
            chain.problems.append(ChainFault(
                f"journal gap: seqs {covered + 1}..{ref.after_seq} are in no segment (the "
                f"next one, {ref.key}, starts after {ref.after_seq})", ref.key))
            stopped_at = index
            break
        if ref.upto_seq <= covered:
            chain.duplicates.append(ref.key)
            continue
        try:
            segment = read_segment(dest, ref, cipher)
        except BackupError as exc:  # damaged, another key, or the destination failed
            chain.problems.append(ChainFault(f"{ref.key}: {exc.message}"
                                             if ref.key not in exc.message else exc.message,
                                             ref.key))
            stopped_at = index + 1
            break
        if previous is not None and segment.header.get("prev_sha256") != previous.sha256:
            chain.problems.append(ChainFault(
                f"journal chain broken at {ref.key}: it names previous sha256 "
                f"{segment.header.get('prev_sha256')}, but {previous.ref.key} has "
                f"{previous.sha256}", ref.key))
            stopped_at = index + 1
            break
        if head is not None and ref.upto_seq == head.journal_upto \
                and head.journal_tip_sha256 and segment.sha256 != head.journal_tip_sha256:
            chain.problems.append(ChainFault(
                f"journal segment {ref.key} has sha256 {segment.sha256}, the lineage head says "
                f"{head.journal_tip_sha256}: the segment is damaged or replaced", ref.key))
            stopped_at = index + 1
            break
        chain.segments.append(segment)
        previous = segment
        covered = ref.upto_seq
    for ref in pending[stopped_at:]:  # what lies past the stop: each checked on its own
        try:
            chain.beyond.append(read_segment(dest, ref, cipher))
        except BackupError as exc:
            chain.problems.append(ChainFault(f"past the end of the chain: {exc.message}",
                                             ref.key))
    return chain
