"""How far a lineage's backups promise to reach (its high-water mark), how far a restore gets,
and what lies between: the lost seqs and, where known, their namespaces and memories.

The high-water mark is the highest seq anything vouches for: the lineage head's
`journal_upto`, the seq of its newest snapshot (even a damaged one: its name says the seq),
the end of its newest segment (even past a gap), and what the caller knows (the guard's
ledger). A restore that ends short of it has lost the seqs in between.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from memvault.backup import layout
from memvault.backup.catalog import BackupEntry
from memvault.backup.head import LineageHead
from memvault.backup.journal import Segment, SegmentRef
from memvault.store import JournalEntry, namespace_key


@dataclass
class HighWater:
    seq: int = 0
    sources: dict[str, int] = field(default_factory=dict)  # what vouches for which seq

    def raise_to(self, source: str, seq: int | None) -> None:
        if seq is None:
            return
        self.sources[source] = max(seq, self.sources.get(source, seq))
        self.seq = max(self.seq, seq)

    def describe(self) -> str:
        return ", ".join(f"{source} {seq}" for source, seq in
                         sorted(self.sources.items(), key=lambda item: -item[1]))


def folder_seq(entry: BackupEntry) -> int | None:
    """The seq a format-2 snapshot folder's name says (None for format 1)."""
    match = layout.SNAPSHOT_FOLDER_RE.match(entry.folder.rstrip("/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match and entry.folder.startswith(layout.LINEAGES) else None


def entry_seq(entry: BackupEntry) -> int | None:
    """The seq a finished snapshot was taken at: its manifest's, else (a damaged manifest
    still promises that seq) what its folder name says; None for one never finished."""
    if entry.manifest is not None:
        return entry.manifest.seq
    return folder_seq(entry) if entry.problem else None


def entry_lineage(entry: BackupEntry) -> str | None:
    return entry.manifest.lineage_id if entry.manifest else layout.lineage_of(entry.folder)


def lineage_high_water(lineage_id: str, entries: list[BackupEntry],
                       heads: list[LineageHead | None], refs: list[list[SegmentRef]],
                       caller: int | None = None) -> HighWater:
    mark = HighWater()
    for head in heads:
        if head is not None:
            mark.raise_to("lineage head journal_upto", head.journal_upto)
            mark.raise_to("lineage head snapshot_seq", getattr(head, "snapshot_seq", None))
    for entry in entries:
        if entry_lineage(entry) == lineage_id:
            mark.raise_to(f"snapshot {entry.id}", entry_seq(entry))
    for dest_refs in refs:
        if dest_refs:
            mark.raise_to("newest journal segment", max(r.upto_seq for r in dest_refs))
    mark.raise_to("caller (ledger)", caller)
    return mark


def _namespace(entry: JournalEntry) -> str:
    data = entry.after or entry.before or {}
    return namespace_key(data.get("user_id"), data.get("agent_id"), data.get("run_id"))


@dataclass
class Loss:
    """What a restore reaching `reached` misses of a lineage promised up to `high_water`."""

    reached: int
    high_water: HighWater
    known: list[JournalEntry] = field(default_factory=list)  # lost entries still readable
    newer_snapshot: dict[str, Any] | None = None  # a damaged newer snapshot's counts
    restored_counts: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> bool:
        return self.reached < self.high_water.seq

    def namespaces(self) -> dict[str, dict[str, int]]:
        """Per namespace: the lost entries known (from segments past a gap) by operation, and
        the memories a damaged newer snapshot held beyond what the restore gives."""
        out: dict[str, Counter[str]] = {}
        for entry in self.known:
            out.setdefault(_namespace(entry), Counter())[entry.op.lower()] += 1
        if self.newer_snapshot:
            for ns, held in self.newer_snapshot["counts"].items():
                short = held - self.restored_counts.get(ns, 0)
                if short > 0:
                    out.setdefault(ns, Counter())["memories_short_of_newer_snapshot"] = short
        return {ns: dict(sorted(ops.items())) for ns, ops in sorted(out.items())}

    def describe(self) -> str:
        if not self.lost:
            return "nothing lost"
        text = (f"seqs {self.reached + 1}..{self.high_water.seq} are lost: the restore ends at "
                f"seq {self.reached}, the lineage reached {self.high_water.seq} "
                f"({self.high_water.describe()})")
        if self.known:
            text += (f"; {len(self.known)} of the lost entries are still readable past the "
                     f"gap (seqs {self.known[0].seq}..{self.known[-1].seq})")
        if self.newer_snapshot:
            text += (f"; the damaged newer backup {self.newer_snapshot['backup']} held "
                     f"{sum(self.newer_snapshot['counts'].values())} memories at seq "
                     f"{self.newer_snapshot['seq']}")
        namespaces = self.namespaces()
        if namespaces:
            text += "; by namespace: " + "; ".join(
                f"{ns} " + ", ".join(f"{n} {what}" for what, n in ops.items())
                for ns, ops in namespaces.items())
        return text

    def to_json(self) -> dict[str, Any]:
        return {"lost": self.lost, "reached_seq": self.reached,
                "high_water_seq": self.high_water.seq,
                "high_water_sources": self.high_water.sources,
                "lost_seqs": [self.reached + 1, self.high_water.seq] if self.lost else None,
                "known_lost_entries": [e.seq for e in self.known],
                "namespaces": self.namespaces(), "newer_snapshot": self.newer_snapshot,
                "summary": self.describe()}


def known_lost(beyond: list[Segment], reached: int) -> list[JournalEntry]:
    seen: dict[int, JournalEntry] = {}
    for segment in beyond:
        for entry in segment.entries:
            if entry.seq > reached:
                seen.setdefault(entry.seq, entry)
    return [seen[seq] for seq in sorted(seen)]


def newer_snapshot(entries: list[BackupEntry], lineage_id: str, seq: int
                   ) -> dict[str, Any] | None:
    """The newest snapshot of the lineage past `seq` that has readable counts (it was not
    used, so it is damaged or unreadable: what it held is what may be lost)."""
    newer = [e for e in entries if e.manifest and e.manifest.lineage_id == lineage_id
             and e.manifest.seq > seq]
    if not newer:
        return None
    best = max(newer, key=lambda e: e.order())
    assert best.manifest is not None
    return {"backup": best.id, "destination": best.destination.url, "seq": best.manifest.seq,
            "status": best.status, "counts": dict(best.manifest.counts)}
