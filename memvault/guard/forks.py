"""Two writers in one lineage: what the guard sees of a fork in the destinations.

One writer per lineage is enforced where it can be (an OS lock per SQLite store, a leader per
PostgreSQL cluster). Where it cannot (SQLite on NFS, where flock lies; a copied store file;
two clusters restored from one backup), the fork shows in what is shipped:
- the lineage's head is written by another process whose beat moves while this process ships;
- the newest shipped segment this store overlaps holds, at some seq, another entry than this
  store's journal has at that seq (both wrote that seq).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import replace
from typing import TYPE_CHECKING

from memvault.backup.crypto import cipher_for
from memvault.backup.destinations import Destination
from memvault.errors import MemvaultError
from memvault.guard.lineages import LineageState, Liveness, LivenessWatch

if TYPE_CHECKING:
    from memvault.store import Store

log = logging.getLogger("memvault.guard")


def foreign_writers(own: LineageState | None, watch: LivenessWatch) -> list[str]:
    """Other live processes writing this lineage's head (this process's own head excluded)."""
    if own is None:
        return []
    me = (socket.gethostname(), os.getpid())
    foreign = {url: h for url, h in own.heads.items() if (h.host, h.pid) != me}
    if not foreign:
        return []
    view = replace(own, heads=foreign)
    if watch.liveness(view) is not Liveness.LIVE:
        return []
    return [f"{view.writer()} in {', '.join(sorted(foreign))}"]


def journal_forks(store: Store, lineage_id: str, destinations: list[Destination],
                  secret: str | None, after_seq: int) -> list[str]:
    """Where the newest shipped segment overlapping this store's journal (past `after_seq`:
    a restore replays the journal under new seqs below it) disagrees with it."""
    from memvault.backup.journal import list_segments, read_segment

    last_seq = store.last_seq()
    cipher = cipher_for(secret)
    found = []
    for dest in destinations:
        try:
            refs = [r for r in list_segments(dest, lineage_id)
                    if r.after_seq < last_seq and r.upto_seq > after_seq]
            if not refs:
                continue
            ref = max(refs, key=lambda r: r.upto_seq)
            segment = read_segment(dest, ref, cipher)
            start = max(ref.after_seq, after_seq)
            mine = {e.seq: e for e in store.journal(start, ref.upto_seq - start)}
        except (MemvaultError, OSError) as exc:
            log.warning("cannot compare the shipped journal in %s: %s", dest, exc)
            continue
        for entry in segment.entries:
            if entry.seq <= start or entry.seq > last_seq:
                continue
            own = mine.get(entry.seq)
            if own is None or (own.op, own.memory_id, own.ts) != (entry.op, entry.memory_id,
                                                                   entry.ts):
                theirs = f"{entry.op} {entry.memory_id} at {entry.ts}"
                ours = f"{own.op} {own.memory_id} at {own.ts}" if own else "nothing"
                found.append(f"{ref.key} in {dest.url} holds seq {entry.seq} as {theirs}, "
                             f"this store's journal has {ours} (shipped by store "
                             f"{segment.header.get('store_id')})")
                break
    return found
