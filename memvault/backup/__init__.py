"""Backups that prove themselves: snapshots, journal shipping, verify, retention, restore."""

from __future__ import annotations

from memvault.backup.catalog import BackupEntry, list_backups, newest_valid
from memvault.backup.destinations import Destination, open_destination, open_destinations
from memvault.backup.errors import (
    BackupCorrupt,
    BackupError,
    DestinationError,
    EncryptionKeyError,
    RestoreLoss,
    RestoreRefused,
    RetentionRefused,
)
from memvault.backup.format import (
    INCOMPLETE,
    SUSPICIOUS,
    VALID,
    Manifest,
    Validity,
    all_valid,
    not_valid,
)
from memvault.backup.restore import (
    RestorePlan,
    plan_restore,
    restore_incomplete,
    run_restore,
)
from memvault.backup.retention import apply_prune, plan_prune
from memvault.backup.scheduler import BackupScheduler
from memvault.backup.shipper import JournalShipper
from memvault.backup.snapshot import BackupResult, create_backup
from memvault.backup.verify import verify_backups

__all__ = [
    "INCOMPLETE",
    "SUSPICIOUS",
    "VALID",
    "BackupCorrupt",
    "BackupEntry",
    "BackupError",
    "BackupResult",
    "BackupScheduler",
    "Destination",
    "DestinationError",
    "EncryptionKeyError",
    "JournalShipper",
    "Manifest",
    "RestoreLoss",
    "RestorePlan",
    "RestoreRefused",
    "RetentionRefused",
    "Validity",
    "all_valid",
    "apply_prune",
    "create_backup",
    "list_backups",
    "newest_valid",
    "not_valid",
    "open_destination",
    "open_destinations",
    "plan_prune",
    "plan_restore",
    "restore_incomplete",
    "run_restore",
    "verify_backups",
]
