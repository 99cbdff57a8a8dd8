"""Small write-once JSON records kept with the backups (the guard's ledger, drill and digest
records), one folder per lineage, named by the lineage's seq:

    lineages/<lineage>/<kind>/<seq16>-<stamp>.json

"Newest" is the highest (seq, stamp): a record named with a clock that ran ahead never hides
the records written after the clock was corrected, and pruning keeps the newest `keep` by seq.
Format-1 records (`ledger/<time>-<seq>.json`, `drills/<time>.json`, `digests/<day>.json`) are
still read; nothing new is written there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from memvault.backup.destinations import Destination
from memvault.backup.layout import (
    LINEAGES,
    RecordKind,
    legacy_records_prefix,
    lineage_of,
    parse_record_seq,
    record_key,
    records_prefix,
)
from memvault.errors import MemvaultError

log = logging.getLogger("memvault.backup")
_LEGACY_LEDGER_RE = re.compile(r"^\d{8}T\d+Z-(\d+)$")


@dataclass(frozen=True, order=True)
class RecordName:
    """Where a record sorts: by seq, then by its stamp; legacy records (seq unknown from the
    name) sort before every format-2 record of the same seq."""

    seq: int
    stamp: str
    key: str = field(compare=False)


def name_of(key: str) -> RecordName:
    seq = parse_record_seq(key)
    leaf = key.rsplit("/", 1)[-1].removesuffix(".json")
    if seq is None:
        legacy = _LEGACY_LEDGER_RE.match(leaf)  # `<time>-<seq>`: the seq is known
        return RecordName(int(legacy.group(1)) if legacy else -1, "-" + leaf, key)  # "-" < "0"
    return RecordName(seq, leaf.split("-", 1)[1], key)


def put_records(destinations: list[Destination], key: str, payload: bytes, *, prefix: str,
                keep: int, what: str) -> list[str]:
    """Write a small record under `key` to every destination (never overwriting: a key that
    exists is left as it is), then keep only the newest `keep` records under `prefix` (newest
    by seq, see RecordName). Returns the problems, one per failing destination, each logged;
    the other destinations are still written."""
    problems = []
    for dest in destinations:
        try:
            if dest.size(key) is None:
                dest.put_bytes(key, payload)
            names = sorted(name_of(k) for k in dest.list(prefix) if k.endswith(".json"))
            old = [n.key for n in names[:-keep] if n.key != key] if keep else []
            if old:
                dest.delete(old)
        except (MemvaultError, OSError) as exc:
            message = f"cannot write the {what} to {dest.url}: {exc}"
            log.error(message)
            problems.append(message)
    return problems


def next_record_key(destinations: list[Destination], lineage_id: str, kind: RecordKind,
                    seq: int, when: str) -> str:
    """The key for a new record of `lineage_id` at `seq`: its stamp leads with a counter one
    past the records already at that seq (so the new one sorts after them whatever the clock
    says), then `when` (letters and digits, for people)."""
    at_seq = 0
    for dest in destinations:
        try:
            names = [name_of(k) for k in dest.list(records_prefix(lineage_id, kind))]
        except (MemvaultError, OSError):
            continue  # put_records reports the destination
        at_seq = max([at_seq, *(_counter(n.stamp) + 1 for n in names if n.seq == seq)])
    return record_key(lineage_id, kind, seq, f"{at_seq:04d}{when}")


def _counter(stamp: str) -> int:
    digits = stamp[:4]
    return int(digits) if digits.isdigit() else 0


def lineage_record_keys(destinations: list[Destination], kind: RecordKind,
                        lineage_id: str | None = None
                        ) -> tuple[dict[str, list[Destination]], list[str]]:
    """Records of one kind: of `lineage_id` (of every lineage when None) plus the legacy
    folder (whose records name their lineage inside, not in the key). Problems: one per
    destination that could not be listed."""
    prefixes = [records_prefix(lineage_id, kind) if lineage_id else f"{LINEAGES}/",
                legacy_records_prefix(kind)]
    where: dict[str, list[Destination]] = {}
    problems = []
    for dest in destinations:
        try:
            keys = [k for prefix in prefixes for k in dest.list(prefix) if k.endswith(".json")]
        except (MemvaultError, OSError) as exc:
            problems.append(f"cannot list the {kind.value} records in {dest.url}: {exc}")
            continue
        for key in keys:
            if lineage_of(key) is None or key.split("/")[2] == kind.value:
                where.setdefault(key, []).append(dest)
    return where, problems


def newest_first(keys: Iterable[str]) -> list[str]:
    """Keys ordered newest first by (seq, stamp)."""
    return [n.key for n in sorted((name_of(k) for k in keys), reverse=True)]
