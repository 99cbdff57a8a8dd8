"""What a destination holds: its snapshots (valid, suspicious, incomplete) and their manifests."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memvault.backup import layout
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupCorrupt, BackupError
from memvault.backup.format import (
    INCOMPLETE,
    MANIFEST,
    UNREADABLE,
    VALID,
    Manifest,
    legacy_snapshot_folder,
    snapshot_key,
)

log = logging.getLogger("memvault.backup")
# A manifest whose files the listing does not show (or shows with other sizes): never valid,
# whatever the manifest says; left for inspection, `backup verify` names each file.
DAMAGED = "damaged"


@dataclass
class BackupEntry:
    """One snapshot folder in one destination."""

    id: str
    destination: Destination
    status: str
    manifest: Manifest | None
    keys: list[str]
    problem: str | None = None
    folder: str = ""  # where the files are: `lineages/<l>/snapshots/<seq>-<id>/` (or format 1)

    def __post_init__(self) -> None:
        if not self.folder:
            self.folder = legacy_snapshot_folder(self.id)

    @property
    def seq(self) -> int:
        """The journal seq the snapshot was taken at (-1 when its manifest is unreadable)."""
        return self.manifest.seq if self.manifest else -1

    @property
    def created_at(self) -> str:
        return self.manifest.created_at if self.manifest else ""

    @property
    def created(self) -> datetime | None:
        return datetime.fromisoformat(self.manifest.created_at) if self.manifest else None

    @property
    def valid(self) -> bool:
        return self.status == VALID

    def order(self) -> tuple[int, str, str]:
        """Newer means a higher journal seq; the wall clock only breaks ties (for people)."""
        return (self.seq, self.created_at, self.id)

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": self.id,
            "destination": self.destination.url,
            "status": self.status,
            "reasons": ([self.problem] if self.problem else m.validation.get("reasons", [])
                        if m else ["no manifest: the backup never finished"]),
            "created_at": m.created_at if m else None,
            "seq": m.seq if m else None,
            "total": m.total if m else None,
            "counts": m.counts if m else None,
            "store_id": m.store_id if m else None,
            "lineage_id": m.lineage_id if m else None,
            "active_embedder": m.active_embedder if m else None,
            "encrypted": m.encrypted if m else None,
            "size": sum(f.size for f in m.files.values()) if m else None,
            "tag": m.tag if m else None,
        }


def _snapshot_folders(dest: Destination
                      ) -> tuple[dict[str, tuple[str, list[str]]], dict[str, int]]:
    """folder -> (backup id, keys) for format-2 folders of every lineage and format-1 ones,
    and the size of every key listed."""
    folders: dict[str, tuple[str, list[str]]] = {}
    sizes = dest.list_sizes(layout.LINEAGES + "/")
    for key in sorted(sizes):
        parts = key.split("/")  # lineages/<lineage>/snapshots/<seq>-<id>/<file>
        if len(parts) >= 5 and parts[2] == layout.SNAPSHOTS:
            match = layout.SNAPSHOT_FOLDER_RE.match(parts[3])
            if match:
                folder = "/".join(parts[:4]) + "/"
                folders.setdefault(folder, (match.group(2), []))[1].append(key)
    legacy = dest.list_sizes(layout.LEGACY_SNAPSHOTS + "/")
    sizes.update(legacy)
    for key in sorted(legacy):
        parts = key.split("/")
        if len(parts) >= 3:
            folder = legacy_snapshot_folder(parts[1])
            folders.setdefault(folder, (parts[1], []))[1].append(key)
    return folders, sizes


def list_backups(dest: Destination) -> list[BackupEntry]:
    """Every snapshot folder (both layouts), oldest (lowest seq) first. A folder without a
    manifest is `incomplete`, and so is one whose manifest names a file the listing does not
    show with the size the manifest gives: a manifest alone (its data never written, or
    lost) is never a valid backup."""
    entries = []
    folders, sizes = _snapshot_folders(dest)
    for folder, (backup_id, keys) in folders.items():
        if snapshot_key(folder, MANIFEST) not in keys:
            entries.append(BackupEntry(backup_id, dest, INCOMPLETE, None, keys, folder=folder))
            continue
        try:
            manifest = load_manifest(dest, folder)
        except BackupError as exc:
            log.error("backup %s in %s has an unreadable manifest: %s", backup_id, dest, exc)
            entries.append(BackupEntry(backup_id, dest, UNREADABLE, None, keys, str(exc),
                                       folder=folder))
            continue
        missing = missing_files(manifest, sizes, lambda name, f=folder: snapshot_key(f, name))
        if missing:
            problem = (f"its manifest names files that are not there: {'; '.join(missing)} "
                       "(the run that wrote it failed or the files were deleted)")
            log.error("backup %s in %s is not usable: %s", backup_id, dest, problem)
            entries.append(BackupEntry(backup_id, dest, DAMAGED, manifest, keys, problem,
                                       folder=folder))
            continue
        entries.append(BackupEntry(backup_id, dest, manifest.status, manifest, keys,
                                   folder=folder))
    entries.sort(key=BackupEntry.order)
    return entries


def missing_files(manifest: Manifest, sizes: dict[str, int], key_of: Callable[[str], str]
                  ) -> list[str]:
    """Each file the manifest names that the listing lacks or shows with another size."""
    missing = []
    for name, info in manifest.files.items():
        listed = sizes.get(key_of(name))
        if listed is None:
            missing.append(f"{name} is missing")
        elif listed != info.size:
            missing.append(f"{name} holds {listed} bytes, the manifest says {info.size}")
    return missing


def load_manifest(dest: Destination, folder: str) -> Manifest:
    key = snapshot_key(folder, MANIFEST)
    raw = dest.read_bytes(key)
    try:
        return Manifest.from_bytes(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupCorrupt(f"{key} in {dest} is not a readable manifest: {exc}",
                            file=MANIFEST) from None


def newest_valid(entries: list[BackupEntry]) -> BackupEntry | None:
    """The valid backup at the highest journal seq (never the one with the latest clock)."""
    return max((e for e in entries if e.valid), key=BackupEntry.order, default=None)
