"""Continuous journal shipping: new journal entries go to every destination as segments chained
by seq and by checksum (see journal.py for the read side), and the lineage's head (head.py) is
rewritten on every cycle: the writer's heartbeat and the high-water marks a GET can confirm
when a listing answers nothing.

A listing is never the only evidence of absence: when it shows fewer segments than the head
names, the chain continues from the head's tip; shipping refuses (the error shows as journal
lag) rather than start a new chain over an existing one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from memvault.backup import layout, metrics
from memvault.backup.catalog import list_backups
from memvault.backup.crypto import cipher_for
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.errors import DestinationError
from memvault.backup.format import VALID, Manifest, encode_bytes
from memvault.backup.head import (
    LineageHead,
    new_process_id,
    read_head,
    register_lineage,
    write_head,
)
from memvault.backup.journal import SEGMENT_HEADER, SEGMENT_MAX_ENTRIES, list_segments
from memvault.errors import MemvaultError
from memvault.store import utc_now

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.store import Store

log = logging.getLogger("memvault.backup.journal")


@dataclass
class _Beat:
    """What this process last wrote as a destination's head, and when (monotonic)."""

    head: LineageHead | None = None
    written_at: float | None = None
    registered: bool = False


class JournalShipper:
    """Ships new journal entries to every destination; each keeps its own chain tip."""

    def __init__(self, store: Store, settings: Settings,
                 destinations: list[Destination] | None = None, *,
                 clock: Callable[[], float] = time.monotonic, heartbeat: bool = True) -> None:
        self.store = store
        self.settings = settings
        self.destinations = destinations if destinations is not None \
            else open_destinations(settings)
        secret = settings.backup_encryption_key
        self.cipher = cipher_for(secret.get_secret_value() if secret else None)
        self.process = new_process_id()
        # False for a helper shipper (a one-off snapshot run): it ships and names snapshots in
        # the heads, but the beat stays the running writer's.
        self.heartbeat = heartbeat
        self._clock = clock
        self._tips: dict[tuple[str, str], tuple[int, str | None]] = {}
        self._beats: dict[str, _Beat] = {}  # by destination URL
        self._lock = threading.Lock()
        self._caught_up_at = clock()
        self.errors: dict[str, str] = {}  # destination URL -> why the last cycle failed there
        self.last_error: str | None = None
        self.last_shipped_at: str | None = None

    def lag_seconds(self) -> float:
        """How long entries have waited because shipping fails (0 while it succeeds). A
        monotonic clock: a wall clock stepped back or ahead cannot hide or invent lag."""
        return self._clock() - self._caught_up_at if self.last_error else 0.0

    def _tip(self, dest: Destination, lineage_id: str, new_chain_at: int = 0
             ) -> tuple[int, str | None]:
        """(upto_seq, sha256) of the newest segment, or where shipping starts for a new chain."""
        cached = self._tips.get((dest.url, lineage_id))
        if cached is not None:
            return cached
        refs = list_segments(dest, lineage_id)
        head = read_head(dest, lineage_id)  # by GET: confirms what the listing may not show
        listed_upto = max((r.upto_seq for r in refs), default=-1)
        if head is not None and head.journal_upto > max(listed_upto, 0):
            if not head.journal_tip_sha256:
                raise DestinationError(
                    f"the listing of {dest} shows the journal of lineage {lineage_id} up to "
                    f"seq {max(listed_upto, 0)} but its head says {head.journal_upto}, without "
                    "the checksum to continue the chain; refusing to start a new chain over it",
                    hint="check the destination (a listing that lags or answers nothing); "
                         "shipping resumes by itself when the listing shows the segments")
            log.warning("the listing of %s shows the journal of %s up to seq %d, its head says "
                        "%d: continuing from the head (a listing is not proof of absence)",
                        dest, lineage_id, listed_upto, head.journal_upto)
            tip: tuple[int, str | None] = (head.journal_upto, head.journal_tip_sha256)
        elif refs:
            last = max(refs, key=lambda r: r.upto_seq)
            tip = (last.upto_seq, hashlib.sha256(dest.read_bytes(last.key)).hexdigest())
        else:
            # A new chain starts at the OLDEST valid snapshot of this lineage, so that every
            # snapshot a restore may fall back to is bridged by the journal (none: at the very
            # beginning of the journal, or at the first snapshot being taken).
            seqs = [e.seq for e in list_backups(dest) if e.status == VALID
                    and e.manifest and e.manifest.lineage_id == lineage_id]
            tip = (min(seqs) if seqs else new_chain_at, None)
        self._tips[(dest.url, lineage_id)] = tip
        return tip

    def ship(self, *, beat: bool = True, new_chain_at: int = 0) -> int:
        """Ship everything new to every destination and (beat=True) write each one's lineage
        head; returns the number of segments written. A failing destination is logged, named
        in `errors` and retried on the next call; raises nothing. `new_chain_at`: where a
        destination without any chain or snapshot of the lineage starts one (the seq of the
        first snapshot being taken; 0 = the whole journal)."""
        with self._lock:
            meta = self.store.meta()
            shipped = 0
            self.errors = {}
            for dest in self.destinations:
                try:
                    if not self.heartbeat and self._writer_running(dest, meta.lineage_id):
                        continue
                    count = self._ship_to(dest, meta.lineage_id, meta.store_id, new_chain_at)
                    shipped += count
                    if beat and self.heartbeat:
                        self._beat(dest, meta.lineage_id, meta.store_id, force=count > 0)
                except MemvaultError as exc:
                    self._tips.pop((dest.url, meta.lineage_id), None)
                    self.errors[dest.url] = str(exc)
                    metrics.journal_segments.labels("failed").inc()
                    log.error("journal shipping to %s failed: %s", dest, exc)
            self.last_error = "; ".join(f"{u}: {e}" for u, e in self.errors.items()) or None
            if self.errors:
                metrics.journal_lag.set(self._clock() - self._caught_up_at)
            else:
                self._caught_up_at = self._clock()
                metrics.journal_lag.set(0)
            return shipped

    def _writer_running(self, dest: Destination, lineage_id: str) -> bool:
        """Whether the head names a running writer (not stopped) other than this shipper: it
        ships the journal itself, and two shippers of one lineage would fork its chain."""
        head = read_head(dest, lineage_id)
        if head is None or head.stopped or head.process == self.process:
            return False
        log.info("journal of %s in %s: left to its running writer (%s, pid %s)", lineage_id,
                 dest, head.host, head.pid)
        return True

    def note_snapshot(self, dest: Destination, manifest: Manifest) -> None:
        """A valid snapshot reached `dest`: its head now names it (memories, seq), so the next
        snapshot is judged against it even when a listing shows nothing."""
        with self._lock:
            self._beat(dest, manifest.lineage_id, manifest.store_id, force=True,
                       snapshot=manifest)

    def stop(self) -> None:
        """A clean stop: every head says its writer is gone (logged when one cannot be
        written; the next writer's beat moves it on anyway)."""
        if not self.heartbeat:
            return
        with self._lock:
            meta = self.store.meta()
            for dest in self.destinations:
                try:
                    self._beat(dest, meta.lineage_id, meta.store_id, force=True, stopped=True)
                except MemvaultError as exc:
                    log.error("cannot mark the lineage head in %s stopped: %s", dest, exc)

    def _beat(self, dest: Destination, lineage_id: str, store_id: str, *, force: bool,
              stopped: bool = False, snapshot: Manifest | None = None) -> None:
        beat = self._beats.setdefault(dest.url, _Beat())
        now = self._clock()
        if not force and beat.written_at is not None and \
                now - beat.written_at < self.settings.journal_interval:
            return
        if not beat.registered:
            register_lineage(dest, lineage_id)
            beat.registered = True
        # Read back every time (one GET): a snapshot run may have named a newer snapshot.
        base = read_head(dest, lineage_id)
        mine = beat.head if beat.head and beat.head.lineage_id == lineage_id else None
        upto, sha = self._tips.get((dest.url, lineage_id), (0, None))
        if sha is None and base is not None:  # nothing shipped by this process yet
            upto, sha = base.journal_upto, base.journal_tip_sha256
        memories, snapshot_seq = (base.memories, base.snapshot_seq) if base else (None, None)
        if snapshot is not None and snapshot.seq >= (snapshot_seq or 0):
            memories, snapshot_seq = snapshot.total, snapshot.seq
        process, number = self.process, max(base.beat if base else 0,
                                            mine.beat if mine else 0) + 1
        if not self.heartbeat:
            # Not this lineage's heartbeat: name the snapshot, leave the writer's beat alone
            # (and never pose as a running writer).
            process, number, stopped = (base.process, base.beat, base.stopped) if base \
                else (process, number, True)
        head = LineageHead(
            lineage_id=lineage_id, store_id=store_id, process=process, beat=number,
            journal_upto=upto if sha else 0, journal_tip_sha256=sha, memories=memories,
            written_at=utc_now(), stopped=stopped, snapshot_seq=snapshot_seq)
        write_head(dest, head)
        beat.head, beat.written_at = replace(head), now

    def _ship_to(self, dest: Destination, lineage_id: str, store_id: str,
                 new_chain_at: int) -> int:
        shipped = 0
        while True:
            upto, prev_sha = self._tip(dest, lineage_id, new_chain_at)
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
