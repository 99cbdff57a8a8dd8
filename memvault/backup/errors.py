"""Backup errors. Each names what failed (destination, backup, file) and what to do next."""

from __future__ import annotations

from typing import Any

from memvault.errors import MemvaultError


class BackupError(MemvaultError):
    code = "backup_failed"


class DestinationError(BackupError):
    """A destination could not be reached, read or written (full disk, server down...)."""

    code = "backup_destination_unavailable"


class BackupCorrupt(BackupError):
    """A file of a backup does not match its manifest (checksum, size, truncation, decoding)."""

    code = "backup_corrupt"

    def __init__(self, message: str, *, file: str | None = None, hint: str | None = None
                 ) -> None:
        super().__init__(message, hint=hint)
        self.file = file


class EncryptionKeyError(BackupError):
    code = "backup_key_invalid"


class RestoreRefused(BackupError):
    code = "restore_refused"


class RetentionRefused(BackupError):
    code = "retention_refused"


class RestoreLoss(RestoreRefused):
    """The restore would end short of what the lineage's backups promise (lost seqs)."""

    code = "restore_would_lose_data"

    def __init__(self, message: str, *, loss: dict[str, Any], hint: str | None = None
                 ) -> None:
        super().__init__(message, hint=hint)
        self.loss = loss
