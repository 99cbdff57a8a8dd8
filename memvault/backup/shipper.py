"""Continuous journal shipping: new journal entries go to every destination as segments chained
by seq and by checksum (see journal.py for the read side)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from memvault.backup import layout, metrics
from memvault.backup.catalog import list_backups
from memvault.backup.crypto import cipher_for
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.format import VALID, encode_bytes
from memvault.backup.journal import SEGMENT_HEADER, SEGMENT_MAX_ENTRIES, list_segments
from memvault.errors import MemvaultError
from memvault.store.records import utc_now

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.store import Store

log = logging.getLogger("memvault.backup.journal")


class JournalShipper:
    """Ships new journal entries to every destination; each keeps its own chain tip."""

    def __init__(self, store: Store, settings: Settings,
                 destinations: list[Destination] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.destinations = destinations if destinations is not None \
            else open_destinations(settings)
        secret = settings.backup_encryption_key
        self.cipher = cipher_for(secret.get_secret_value() if secret else None)
        self._tips: dict[tuple[str, str], tuple[int, str | None]] = {}
        self._lock = threading.Lock()
        self._caught_up_at = time.time()
        self.last_error: str | None = None
        self.last_shipped_at: str | None = None

    def lag_seconds(self) -> float:
        """How long entries have waited because shipping fails (0 while it succeeds)."""
        return time.time() - self._caught_up_at if self.last_error else 0.0

    def _tip(self, dest: Destination, lineage_id: str) -> tuple[int, str | None]:
        """(upto_seq, sha256) of the newest segment, or where shipping starts for a new chain."""
        cached = self._tips.get((dest.url, lineage_id))
        if cached is not None:
            return cached
        refs = list_segments(dest, lineage_id)
        if refs:
            last = max(refs, key=lambda r: r.upto_seq)
            tip: tuple[int, str | None] = (
                last.upto_seq, hashlib.sha256(dest.read_bytes(last.key)).hexdigest())
        else:
            # A new chain starts at the newest valid snapshot of this lineage (what a restore
            # starts from); without one, at the very beginning of the journal.
            seqs = [e.manifest.seq for e in list_backups(dest) if e.status == VALID
                    and e.manifest and e.manifest.lineage_id == lineage_id]
            tip = (max(seqs) if seqs else 0, None)
        self._tips[(dest.url, lineage_id)] = tip
        return tip

    def ship(self) -> int:
        """Ship everything new to every destination; returns the number of segments written.
        A failing destination is logged and retried on the next call; raises nothing."""
        with self._lock:
            lineage_id = self.store.meta().lineage_id
            store_id = self.store.meta().store_id
            shipped = 0
            errors = []
            for dest in self.destinations:
                try:
                    shipped += self._ship_to(dest, lineage_id, store_id)
                except MemvaultError as exc:
                    self._tips.pop((dest.url, lineage_id), None)
                    errors.append(f"{dest.url}: {exc}")
                    metrics.journal_segments.labels("failed").inc()
                    log.error("journal shipping to %s failed: %s", dest, exc)
            self.last_error = "; ".join(errors) or None
            if errors:
                metrics.journal_lag.set(time.time() - self._caught_up_at)
            else:
                self._caught_up_at = time.time()
                metrics.journal_lag.set(0)
            return shipped

    def _ship_to(self, dest: Destination, lineage_id: str, store_id: str) -> int:
        shipped = 0
        while True:
            upto, prev_sha = self._tip(dest, lineage_id)
            entries = self.store.journal(upto, SEGMENT_MAX_ENTRIES)
            if not entries:
                return shipped
            last = entries[-1].seq
            header = {SEGMENT_HEADER: {
                "format_version": 1, "lineage_id": lineage_id, "store_id": store_id,
                "after_seq": upto, "upto_seq": last, "count": len(entries),
                "first_ts": entries[0].ts, "last_ts": entries[-1].ts,
                "prev_sha256": prev_sha, "created_at": utc_now(),
                "encrypted": self.cipher is not None}}
            lines = [json.dumps(header, separators=(",", ":"))]
            lines += [json.dumps(e.to_dict(), ensure_ascii=False, separators=(",", ":"))
                      for e in entries]
            stored = encode_bytes(("\n".join(lines) + "\n").encode("utf-8"), self.cipher)
            dest.put_bytes(layout.segment_key(lineage_id, upto, last), stored)
            self._tips[(dest.url, lineage_id)] = (last, hashlib.sha256(stored).hexdigest())
            self.last_shipped_at = utc_now()
            metrics.journal_segments.labels("shipped").inc()
            log.info("shipped journal (%d, %d] (%d entries) to %s", upto, last, len(entries),
                     dest)
            shipped += 1
