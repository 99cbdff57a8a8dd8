"""`backup verify`: structure (manifest, files, sizes) and journal chain; with --read-data a full
read with checksums. Every fault names the destination, the backup, the file and what is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memvault.backup.catalog import BackupEntry, list_backups, newest_valid
from memvault.backup.crypto import Cipher
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupError
from memvault.backup.format import INCOMPLETE, MANIFEST, UNREADABLE, read_snapshot, snapshot_key
from memvault.backup.journal import follow_chain, list_segments


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
            read_snapshot(dest, manifest, cipher, folder=entry.folder)
        except BackupError as exc:
            faults.append(Fault(dest.url, entry.id, getattr(exc, "file", None), exc.message))
    return faults


def verify_journal(dest: Destination, lineage_id: str, cipher: Cipher | None
                   ) -> tuple[dict[str, Any], list[Fault]]:
    refs = list_segments(dest, lineage_id)
    if not refs:
        return {"destination": dest.url, "lineage_id": lineage_id, "segments": 0}, []
    chain = follow_chain(dest, lineage_id, refs[0].after_seq, cipher, refs)
    summary = {"destination": dest.url, "lineage_id": lineage_id, "segments": len(refs),
               "from_seq": refs[0].after_seq, "upto_seq": chain.upto_seq,
               "last_ts": chain.segments[-1].header.get("last_ts") if chain.segments else None}
    faults = [Fault(dest.url, None, f"journal/{lineage_id}", f) for f in chain.faults]
    return summary, faults


def verify_backups(destinations: list[Destination], cipher: Cipher | None, *,
                   backup_id: str | None = None, every: bool = False, read_data: bool = False
                   ) -> VerifyReport:
    """Verify one backup (by id), all (every=True) or the newest valid one per destination."""
    report = VerifyReport()
    found = False
    for dest in destinations:
        try:
            entries = list_backups(dest)
        except BackupError as exc:
            report.faults.append(Fault(dest.url, None, None, exc.message))
            continue
        if backup_id:
            chosen = [e for e in entries if e.id == backup_id]
        elif every:
            chosen = entries
        else:
            newest = newest_valid(entries) or (entries[-1] if entries else None)
            chosen = [newest] if newest else []
        if not chosen and not backup_id:
            report.faults.append(Fault(dest.url, None, None, "holds no backup"))
        found = found or bool(chosen)
        lineages = []
        for entry in chosen:
            faults = verify_entry(entry, read_data, cipher)
            report.faults += faults
            report.checked.append({**entry.summary(), "read_data": read_data,
                                   "faults": [f.to_json() for f in faults]})
            if entry.manifest and entry.manifest.lineage_id not in lineages:
                lineages.append(entry.manifest.lineage_id)
        for lineage_id in lineages:
            try:
                summary, faults = verify_journal(dest, lineage_id, cipher)
            except BackupError as exc:
                summary, faults = {"destination": dest.url, "lineage_id": lineage_id}, [
                    Fault(dest.url, None, f"journal/{lineage_id}", exc.message)]
            report.journal.append(summary)
            report.faults += faults
    if backup_id and not found:
        report.faults.append(Fault(", ".join(d.url for d in destinations), backup_id, None,
                                   "no backup with this id in any destination"))
    return report
