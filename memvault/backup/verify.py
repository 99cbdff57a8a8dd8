"""`backup verify`: structure (manifest, files, sizes) and journal chain; with --read-data a full
read with checksums. Every fault names the destination, the backup, the file and what is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memvault.backup.catalog import BackupEntry, list_backups, newest_valid
from memvault.backup.coverage import entry_lineage, entry_seq, folder_seq, lineage_high_water
from memvault.backup.crypto import Cipher
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupError
from memvault.backup.format import INCOMPLETE, MANIFEST, UNREADABLE, check_snapshot, snapshot_key
from memvault.backup.head import read_head, read_journal_floor, read_marker
from memvault.backup.journal import follow_chain, list_segments
from memvault.backup.layout import DESTINATION_MARKER, head_key, retention_key


@dataclass
class Fault:
    destination: str
    backup: str | None
    file: str | None
    fault: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    def __str__(self) -> str:
        where = "/".join(p for p in (self.backup, self.file) if p)
        return f"{self.destination}: {where}: {self.fault}"


@dataclass
class VerifyReport:
    checked: list[dict[str, Any]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "backups": self.checked, "journal": self.journal,
                "faults": [f.to_json() for f in self.faults]}


def verify_entry(entry: BackupEntry, read_data: bool, cipher: Cipher | None) -> list[Fault]:
    dest = entry.destination
    if entry.status == INCOMPLETE and entry.manifest is None:
        return [Fault(dest.url, entry.id, MANIFEST,
                      "missing: the backup never finished (interrupted or failed)")]
    if entry.status == UNREADABLE or entry.manifest is None:
        return [Fault(dest.url, entry.id, MANIFEST, entry.problem or "unreadable")]
    manifest = entry.manifest
    faults = []
    listed = {snapshot_key(entry.folder, name): name for name in manifest.files}
    for key, name in listed.items():
        size = dest.size(key)
        if size is None:
            faults.append(Fault(dest.url, entry.id, name, "missing"))
        elif size != manifest.files[name].size:
            faults.append(Fault(dest.url, entry.id, name,
                                f"has {size} bytes, the manifest says "
                                f"{manifest.files[name].size} (truncated or damaged)"))
    for key in entry.keys:
        if key not in listed and key != snapshot_key(entry.folder, MANIFEST):
            faults.append(Fault(dest.url, entry.id, key.rsplit("/", 1)[-1],
                                "unexpected file not listed in the manifest"))
    if read_data and not faults:
        try:
            check_snapshot(dest, manifest, cipher, folder=entry.folder)
        except BackupError as exc:
            faults.append(Fault(dest.url, entry.id, getattr(exc, "file", None), exc.message))
    return faults


def _select(entries: list[BackupEntry], backup_id: str | None, every: bool
            ) -> list[BackupEntry]:
    """By id; all; or per lineage its newest valid backup and everything newer than it (a
    damaged or unfinished newer snapshot is a fault, not something to skip over)."""
    if backup_id:
        return [e for e in entries if e.id == backup_id]
    if every:
        return entries
    chosen = []
    for lineage_id in {entry_lineage(e) for e in entries}:
        mine = [e for e in entries if entry_lineage(e) == lineage_id]
        newest = newest_valid(mine)
        floor = newest.seq if newest else -1
        chosen += [e for e in mine if e is newest or (not e.valid and _seq(e) > floor)]
        if newest is None and not chosen and mine:
            chosen.append(max(mine, key=BackupEntry.order))
    return sorted(chosen, key=BackupEntry.order)


def _check_marker(dest: Destination, lineages: list[str], report: VerifyReport) -> None:
    """The destination marker (when there is one) must name every lineage present, and each
    lineage it names must have its head: a missing head or name is something deleted."""
    try:
        named = read_marker(dest)
    except BackupError as exc:
        report.faults.append(Fault(dest.url, None, DESTINATION_MARKER, exc.message))
        return
    if not named:
        heads = [lineage_id for lineage_id in lineages if dest.size(head_key(lineage_id))]
        if heads:  # the marker is written before any head: it was deleted
            report.faults.append(Fault(dest.url, None, DESTINATION_MARKER,
                                       f"missing, although lineage {heads[0]} has a head here "
                                       "(deleted)"))
        return  # else a destination written before markers existed
    for lineage_id in lineages:
        if lineage_id not in named:
            report.faults.append(Fault(dest.url, None, DESTINATION_MARKER,
                                       f"does not name lineage {lineage_id}, which has backups "
                                       "here (the marker is damaged or was replaced)"))
    for lineage_id in named:
        if dest.size(head_key(lineage_id)) is None:
            report.faults.append(Fault(dest.url, None, head_key(lineage_id),
                                       f"missing: {DESTINATION_MARKER} names lineage "
                                       f"{lineage_id}, whose head is not there (deleted, or "
                                       "the marker is damaged)"))


def _seq(entry: BackupEntry) -> int:
    seq = entry_seq(entry)
    return seq if seq is not None else folder_seq(entry) or 0


def verify_journal(dest: Destination, lineage_id: str, cipher: Cipher | None,
                   entries: list[BackupEntry], high_water: int | None = None,
                   checked: list[BackupEntry] | None = None
                   ) -> tuple[dict[str, Any], list[Fault]]:
    """The lineage's whole chain (every segment read and checked), the newest segment
    against the lineage head, and coverage: from each checked snapshot (default: the newest
    valid) up to the lineage's high-water mark, every seq must be in a readable segment."""
    faults: list[Fault] = []
    head_file = head_key(lineage_id)
    try:
        head = read_head(dest, lineage_id)
    except BackupError as exc:
        head = None
        faults.append(Fault(dest.url, None, head_file, exc.message))
    refs = list_segments(dest, lineage_id)
    mark = lineage_high_water(lineage_id, entries, [head], [refs], high_water)
    newest = newest_valid([e for e in entries if entry_lineage(e) == lineage_id])
    start = min([r.after_seq for r in refs] + ([newest.seq] if newest else []), default=0)
    chain = follow_chain(dest, lineage_id, start, cipher, refs, head)
    faults += [Fault(dest.url, None, p.file or f"journal of {lineage_id}", p.message)
               for p in chain.problems]
    faults += [Fault(dest.url, None, key, "duplicate: this segment covers seqs another "
                     "segment already covers") for key in chain.duplicates]
    snapshots = checked if checked is not None else [newest] if newest else []
    try:
        floor = read_journal_floor(dest, lineage_id)
    except BackupError as exc:
        floor = None
        faults.append(Fault(dest.url, None, retention_key(lineage_id), exc.message))
    point_in_time_only = []
    for entry in snapshots:
        if entry_lineage(entry) != lineage_id or entry.manifest is None:
            continue
        first = refs[0].after_seq if refs else mark.seq
        if floor is not None and entry.seq < first <= floor and entry is not newest:
            # Retention deleted that journal on purpose: this older snapshot restores to its
            # own seq (by id, with --allow-loss), the newest valid one to the high-water mark.
            point_in_time_only.append(entry.id)
            continue
        if entry.seq < min(first, mark.seq):
            faults.append(Fault(dest.url, entry.id, refs[0].key if refs else head_file,
                                f"journal gap: seqs {entry.seq + 1}..{first} after this "
                                "snapshot are in no segment (restoring it stops there)"))
    if not chain.problems and chain.upto_seq < mark.seq:
        faults.append(Fault(
            dest.url, None, head_file if head and head.journal_upto > chain.upto_seq
            else f"journal of {lineage_id}",
            f"the journal ends at seq {chain.upto_seq}, the lineage reached {mark.seq} "
            f"({mark.describe()}): seqs {chain.upto_seq + 1}..{mark.seq} are in no segment"))
    summary = {"destination": dest.url, "lineage_id": lineage_id, "segments": len(refs),
               "from_seq": refs[0].after_seq if refs else None, "upto_seq": chain.upto_seq,
               "high_water_seq": mark.seq,
               "head_journal_upto": head.journal_upto if head else None,
               "journal_pruned_upto": floor, "point_in_time_only": point_in_time_only,
               "last_ts": chain.segments[-1].header.get("last_ts") if chain.segments else None}
    return summary, faults


def verify_backups(destinations: list[Destination], cipher: Cipher | None, *,
                   backup_id: str | None = None, every: bool = False, read_data: bool = False,
                   high_water: int | None = None) -> VerifyReport:
    """Verify one backup (by id), all (every=True) or per lineage the newest valid one and
    anything newer, and the journal of every lineage present."""
    report = VerifyReport()
    found = False
    for dest in destinations:
        try:
            entries = list_backups(dest)
        except BackupError as exc:
            report.faults.append(Fault(dest.url, None, None, exc.message))
            continue
        chosen = _select(entries, backup_id, every)
        if not chosen and not backup_id:
            report.faults.append(Fault(dest.url, None, None, "holds no backup"))
        found = found or bool(chosen)
        for entry in chosen:
            faults = verify_entry(entry, read_data, cipher)
            report.faults += faults
            report.checked.append({**entry.summary(), "read_data": read_data,
                                   "faults": [f.to_json() for f in faults]})
        lineages = sorted({lineage for e in (chosen if backup_id else entries)
                           if (lineage := entry_lineage(e))})
        if not backup_id:
            _check_marker(dest, lineages, report)
        for lineage_id in lineages:
            try:
                summary, faults = verify_journal(dest, lineage_id, cipher, entries, high_water,
                                                 [e for e in chosen if e.valid])
            except BackupError as exc:
                summary, faults = {"destination": dest.url, "lineage_id": lineage_id}, [
                    Fault(dest.url, None, f"journal of {lineage_id}", exc.message)]
            report.journal.append(summary)
            report.faults += faults
    if backup_id and not found:
        report.faults.append(Fault(", ".join(d.url for d in destinations), backup_id, None,
                                   "no backup with this id in any destination"))
    return report
