"""Prometheus metrics of backups (names from PRODUCT.md), on the default registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

backup_last_success = Gauge(
    "memvault_backup_last_success_timestamp_seconds",
    "Unix time of the last valid snapshot, per destination.", ["destination"])
backup_last_memories = Gauge(
    "memvault_backup_last_memories", "Memories in the newest valid snapshot.")
backup_runs = Counter(
    "memvault_backup_runs_total", "Snapshot runs per destination by result "
    "(valid, suspicious, failed).", ["result"])
journal_lag = Gauge(
    "memvault_journal_lag_seconds",
    "Age of the oldest journal entry not yet shipped to every destination (0 = caught up).")
journal_segments = Counter(
    "memvault_journal_segments_total", "Journal segments shipped, by result.", ["result"])
objects_not_deleted = Counter(
    "memvault_backup_objects_not_deleted_total", "Backup objects a prune asked to delete that the "
    "destination refused or kept (each such key is named in the log).", ["destination"])
clock_skew = Gauge(
    "memvault_backup_clock_skew_seconds", "How far the newest wall-clock stamp of a backup "
    "artifact (manifest, journal segment, lineage head) lies in the future of this process's "
    "clock; 0 when none does.", ["destination"])
safety_snapshots = Counter(
    "memvault_safety_snapshots_total", "Safety snapshots taken before a destructive operation, "
    "by operation and result (taken, failed, skipped: --no-safety-snapshot).",
    ["operation", "result"])
