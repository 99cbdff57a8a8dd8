"""Where each object lives in a backup destination, and what "newest" means.

Layout (format 2), one prefix per lineage so that two stores sharing a destination never mix:

    memvault-destination.json                          lineages that have written here (GET-able)
    lineages/<lineage>/head.json                       the lineage's writer: heartbeat, high-water
    lineages/<lineage>/snapshots/<seq>-<id>/<file>     a snapshot taken at journal seq <seq>
    lineages/<lineage>/journal/<after>-<upto>.jsonl.zst
    lineages/<lineage>/<kind>/<seq>-<stamp>.json       ledger, drill and digest records

Seqs are zero-padded to SEQ_WIDTH digits so that names sort by seq: "newest", "latest" and
"previous" always mean the highest (lineage, seq), never the clock. Wall-clock stamps in names
are for people. Format-1 objects (`snapshots/<id>/`, `journal/<lineage>/`, `ledger/`, `drills/`)
are still read; nothing new is written there.
"""

from __future__ import annotations

import re
from enum import StrEnum

SEQ_WIDTH = 16
LINEAGES = "lineages"
DESTINATION_MARKER = "memvault-destination.json"
HEAD = "head.json"
SNAPSHOTS = "snapshots"
JOURNAL = "journal"

# Format 1 (read only).
LEGACY_SNAPSHOTS = "snapshots"
LEGACY_JOURNAL = "journal"

_LINEAGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
SEGMENT_NAME_RE = re.compile(r"^(\d{16})-(\d{16})\.jsonl\.zst$")
RECORD_NAME_RE = re.compile(r"^(\d{16})-([0-9A-Za-z]+)\.json$")
SNAPSHOT_FOLDER_RE = re.compile(r"^(\d{16})-(.+)$")


class RecordKind(StrEnum):
    """Small write-once JSON records kept per lineage."""

    LEDGER = "ledger"
    DRILLS = "drills"
    DIGEST = "digest"


def check_lineage_id(lineage_id: str) -> str:
    """A lineage id is one path segment; anything else would escape its prefix."""
    if not _LINEAGE_RE.match(lineage_id) or lineage_id in (".", ".."):
        raise ValueError(f"{lineage_id!r} is not a lineage id")
    return lineage_id


def seq_name(seq: int) -> str:
    if seq < 0 or seq >= 10 ** SEQ_WIDTH:
        raise ValueError(f"seq {seq} does not fit {SEQ_WIDTH} digits")
    return f"{seq:0{SEQ_WIDTH}d}"


def lineage_prefix(lineage_id: str) -> str:
    return f"{LINEAGES}/{check_lineage_id(lineage_id)}/"


def head_key(lineage_id: str) -> str:
    return lineage_prefix(lineage_id) + HEAD


def retention_key(lineage_id: str) -> str:
    """Where retention records the seq below which it pruned the lineage's journal."""
    return lineage_prefix(lineage_id) + "retention.json"


def snapshots_prefix(lineage_id: str) -> str:
    return lineage_prefix(lineage_id) + SNAPSHOTS + "/"


def snapshot_folder(lineage_id: str, seq: int, backup_id: str) -> str:
    """`lineages/<lineage>/snapshots/<seq>-<id>/` (with the trailing slash)."""
    return f"{snapshots_prefix(lineage_id)}{seq_name(seq)}-{backup_id}/"


def journal_prefix(lineage_id: str) -> str:
    return lineage_prefix(lineage_id) + JOURNAL + "/"


def segment_key(lineage_id: str, after_seq: int, upto_seq: int) -> str:
    return f"{journal_prefix(lineage_id)}{seq_name(after_seq)}-{seq_name(upto_seq)}.jsonl.zst"


def legacy_journal_prefix(lineage_id: str) -> str:
    return f"{LEGACY_JOURNAL}/{check_lineage_id(lineage_id)}/"


def records_prefix(lineage_id: str, kind: RecordKind) -> str:
    return f"{lineage_prefix(lineage_id)}{kind.value}/"


def record_key(lineage_id: str, kind: RecordKind, seq: int, stamp: str) -> str:
    """A record named by the lineage's seq first; `stamp` (digits and letters only) keeps two
    records at one seq apart and tells people when it was written."""
    if not stamp.isalnum():
        raise ValueError(f"record stamp {stamp!r} must be letters and digits")
    return f"{records_prefix(lineage_id, kind)}{seq_name(seq)}-{stamp}.json"


def legacy_records_prefix(kind: RecordKind) -> str:
    return f"{kind.value}/"


def parse_record_seq(key: str) -> int | None:
    """The seq a format-2 record key leads with, or None (a legacy or foreign key)."""
    match = RECORD_NAME_RE.match(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def lineage_of(key: str) -> str | None:
    """The lineage a format-2 key belongs to, or None."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == LINEAGES:
        return parts[1]
    return None
