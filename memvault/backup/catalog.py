"""What a destination holds: its snapshots (valid, suspicious, incomplete) and their manifests."""

from __future__ import annotations

import json
import logging
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

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": self.id,
            "destination": self.destination.url,
            "status": self.status,
            "reasons": (m.validation.get("reasons", []) if m else
                        [self.problem or "no manifest: the backup never finished"]),
            "created_at": m.created_at if m else None,
            "seq": m.seq if m else None,
            "total": m.total if m else None,
            "counts": m.counts if m else None,
            "store_id": m.store_id if m else None,
            "lineage_id": m.lineage_id if m else None,
            "active_embedder": m.active_embedder if m else None,
            "encrypted": m.encrypted if m else None,
            "size": sum(f.size for f in m.files.values()) if m else None,
        }


def _snapshot_folders(dest: Destination) -> dict[str, tuple[str, list[str]]]:
    """folder -> (backup id, keys) for format-2 folders of every lineage and format-1 ones."""
    folders: dict[str, tuple[str, list[str]]] = {}
    for key in dest.list(layout.LINEAGES + "/"):
        parts = key.split("/")  # lineages/<lineage>/snapshots/<seq>-<id>/<file>
        if len(parts) >= 5 and parts[2] == layout.SNAPSHOTS:
            match = layout.SNAPSHOT_FOLDER_RE.match(parts[3])
            if match:
                folder = "/".join(parts[:4]) + "/"
                folders.setdefault(folder, (match.group(2), []))[1].append(key)
    for key in dest.list(layout.LEGACY_SNAPSHOTS + "/"):
        parts = key.split("/")
        if len(parts) >= 3:
            folder = legacy_snapshot_folder(parts[1])
            folders.setdefault(folder, (parts[1], []))[1].append(key)
    return folders


def list_backups(dest: Destination) -> list[BackupEntry]:
    """Every snapshot folder (both layouts), oldest first. A folder without a manifest is
    `incomplete`."""
    entries = []
    for folder, (backup_id, keys) in _snapshot_folders(dest).items():
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
        entries.append(BackupEntry(backup_id, dest, manifest.status, manifest, keys,
                                   folder=folder))
    entries.sort(key=lambda e: (e.created_at or e.id, e.id))
    return entries


def load_manifest(dest: Destination, folder: str) -> Manifest:
    key = snapshot_key(folder, MANIFEST)
    raw = dest.read_bytes(key)
    try:
        return Manifest.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupCorrupt(f"{key} in {dest} is not a readable manifest: {exc}",
                            file=MANIFEST) from None


def newest_valid(entries: list[BackupEntry]) -> BackupEntry | None:
    valid = [e for e in entries if e.valid]
    return valid[-1] if valid else None
