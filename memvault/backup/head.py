"""A lineage's head and the destination marker: the two objects read by GET, never by LIST.

`lineages/<lineage>/head.json` is replaced by the lineage's one writer (the process that ships
its journal) on every shipping cycle. It is the writer's heartbeat (`process` + `beat`: another
store sees the lineage is alive when `beat` moves between two reads, whatever the clocks say)
and the lineage's high-water marks (journal shipped up to `journal_upto`; `memories` and
`snapshot_seq` of its newest valid snapshot), so a listing that answers nothing cannot pass
for "there is nothing".

`memvault-destination.json` names every lineage that ever wrote to the destination: a
destination whose marker names lineages but whose listing shows none is not empty, it is lying.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupCorrupt
from memvault.backup.layout import (
    DESTINATION_MARKER,
    check_lineage_id,
    head_key,
    retention_key,
)

HEAD_FORMAT = 2
# Format 2: the head vouches for itself (sha256 of its canonical JSON without this key).
HEAD_CHECKSUM = "head_sha256"
MARKER_FORMAT = "memvault-destination"
MARKER_CHECKSUM = "marker_sha256"


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class LineageHead:
    lineage_id: str
    store_id: str
    process: str  # one id per writer process run
    beat: int  # increases with every write of the head by that process
    journal_upto: int  # every seq up to this one is in a shipped segment
    journal_tip_sha256: str | None
    memories: int | None  # in the newest valid snapshot (None: none taken yet)
    written_at: str  # wall clock of the writer: for people, never compared
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    stopped: bool = False  # set by a clean shutdown: the writer is gone
    format: int = HEAD_FORMAT
    # The newest valid snapshot of the lineage (by seq) in this destination: a listing that
    # shows none cannot pass for "no history" when judging the next one.
    snapshot_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LineageHead:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def new_process_id() -> str:
    return uuid.uuid4().hex


def read_head(dest: Destination, lineage_id: str) -> LineageHead | None:
    """The lineage's head, or None when it has none. Raises DestinationError when the
    destination does not answer and BackupCorrupt when the object is not a head."""
    key = head_key(lineage_id)
    try:
        raw = dest.read_bytes(key)
    except BackupCorrupt:  # missing
        if dest.size(key) is None:
            return None
        raise
    try:
        data = json.loads(raw)
        if HEAD_CHECKSUM in data or int(data.get("format", 1)) >= 2:
            body = {k: v for k, v in data.items() if k != HEAD_CHECKSUM}
            if data.get(HEAD_CHECKSUM) != _digest(body):
                raise ValueError(f"its {HEAD_CHECKSUM} does not match its content (damaged)")
        return LineageHead.from_json(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BackupCorrupt(f"{key} in {dest} is not a lineage head: {exc}", file=key) from None


def write_head(dest: Destination, head: LineageHead) -> None:
    body = head.to_json()
    body[HEAD_CHECKSUM] = _digest(body)
    dest.replace_bytes(head_key(head.lineage_id), json.dumps(body, indent=1).encode("utf-8"))


def read_marker(dest: Destination) -> list[str]:
    """Lineages the destination's marker names ([] when there is no marker)."""
    try:
        raw = dest.read_bytes(DESTINATION_MARKER)
    except BackupCorrupt:
        if dest.size(DESTINATION_MARKER) is None:
            return []
        raise
    try:
        data = json.loads(raw)
        if data.get("format") != MARKER_FORMAT:
            raise ValueError(f"its format is {data.get('format')!r}")
        if MARKER_CHECKSUM in data or int(data.get("format_version", 1)) >= 2:
            body = {k: v for k, v in data.items() if k != MARKER_CHECKSUM}
            if data.get(MARKER_CHECKSUM) != _digest(body):
                raise ValueError(f"its {MARKER_CHECKSUM} does not match its content (damaged)")
        return [check_lineage_id(str(x)) for x in data["lineages"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BackupCorrupt(f"{DESTINATION_MARKER} in {dest} is not readable: {exc}",
                            file=DESTINATION_MARKER) from None


def register_lineage(dest: Destination, lineage_id: str) -> None:
    """Name `lineage_id` in the destination's marker (read, add, replace, read back). Two
    lineages registering at once may lose one name; the read-back catches that and retries."""
    check_lineage_id(lineage_id)
    for _ in range(3):
        names = read_marker(dest)
        if lineage_id in names:
            return
        body: dict[str, Any] = {"format": MARKER_FORMAT, "format_version": 2,
                                "lineages": sorted({*names, lineage_id})}
        body[MARKER_CHECKSUM] = _digest(body)
        dest.replace_bytes(DESTINATION_MARKER, json.dumps(body, indent=1).encode("utf-8"))
    if lineage_id not in read_marker(dest):
        raise BackupCorrupt(f"{DESTINATION_MARKER} in {dest} keeps losing lineage "
                            f"{lineage_id} (another writer replaces it)",
                            file=DESTINATION_MARKER)


def read_journal_floor(dest: Destination, lineage_id: str) -> int | None:
    """The seq up to which retention deleted the lineage's journal on purpose (None: it never
    did). Snapshots below it restore to their own seq only; that is retention, not damage."""
    key = retention_key(lineage_id)
    try:
        raw = dest.read_bytes(key)
    except BackupCorrupt:
        if dest.size(key) is None:
            return None
        raise
    try:
        return int(json.loads(raw)["journal_floor"])
    except (ValueError, TypeError, KeyError) as exc:
        raise BackupCorrupt(f"{key} in {dest} is not a retention record: {exc}",
                            file=key) from None


def write_journal_floor(dest: Destination, lineage_id: str, floor: int, policy: str) -> None:
    """Record the floor before the segments below it are deleted (a crash between the two
    leaves a record that says a little more than was deleted, never less)."""
    previous = read_journal_floor(dest, lineage_id) or 0
    body = {"format": "memvault-retention", "journal_floor": max(floor, previous),
            "policy": policy}
    dest.replace_bytes(retention_key(lineage_id), json.dumps(body, indent=1).encode("utf-8"))
