"""Continuous journal shipping: segments of journal entries chained by seq and by checksum.

Each segment covers (after_seq, upto_seq] completely and names the sha256 of the segment before
it, so a missing segment (gap) or a replaced one (broken chain) is detected on verify and
restore. Journal seqs themselves may skip numbers (advance_seq); coverage is what is chained.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memvault.backup import layout
from memvault.backup.crypto import Cipher
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupCorrupt
from memvault.backup.format import iter_lines, read_plain
from memvault.store.records import JournalEntry

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
