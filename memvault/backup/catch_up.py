"""`restore --catch-up`: bring a store that is behind its own lineage (a standby promoted
before it replayed the last writes, a database restored from an older dump) forward by
replaying the shipped journal segments after the store's own seq. Nothing is cleared and no
snapshot is loaded; it refuses when the store's journal and the shipped one disagree at any
seq both hold (two writers: replaying would merge a fork)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memvault.backup.crypto import Cipher, cipher_for
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.errors import RestoreRefused
from memvault.backup.head import read_head
from memvault.backup.journal import Chain, follow_chain, list_segments
from memvault.backup.replay import check_replayed, replay
from memvault.errors import MemvaultError
from memvault.progress import NoProgress, Progress
from memvault.store import JournalEntry, MetaKey, utc_now

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.embed import Embedder
    from memvault.store import Store

log = logging.getLogger("memvault.backup.restore")
CATCH_UP = "journal catch-up"  # the `backup` a catch-up's restore marker names


@dataclass
class CatchUpReport:
    lineage_id: str
    store_seq: int  # where the store's own journal ended
    replayed: int
    upto_seq: int  # where the shipped journal ends
    destination: str | None
    lost_upto: int = 0  # seqs upto_seq+1..lost_upto were acknowledged but never shipped

    def to_json(self) -> dict[str, Any]:
        return {"lineage_id": self.lineage_id, "store_seq": self.store_seq,
                "replayed": self.replayed, "upto_seq": self.upto_seq,
                "destination": self.destination, "lost": (
                    [self.upto_seq + 1, self.lost_upto] if self.lost_upto > self.upto_seq
                    else None)}


def _chain(dest: Destination, lineage_id: str, own: int, cipher: Cipher | None) -> Chain | None:
    """The whole shipped chain of the lineage in `dest` (None: nothing shipped): the part up to
    the store's seq is compared with the store's journal, the part past it replayed."""
    refs = list_segments(dest, lineage_id)
    if not refs:
        return None
    first = min(r.after_seq for r in refs)
    if first > own:
        raise RestoreRefused(
            f"the shipped journal of lineage {lineage_id} in {dest} starts after seq {first}, "
            f"the store ends at seq {own}: the seqs between are in no segment",
            hint="restore the newest backup instead (`memvault restore latest --dry-run`)")
    return follow_chain(dest, lineage_id, first, cipher, refs, read_head(dest, lineage_id))


def diverging(store: Store, chain: Chain, own: int) -> str | None:
    """The first seq both journals hold with different entries (None: they agree)."""
    shipped = [e for e in chain.all_entries() if e.seq <= own]
    if not shipped:
        return None
    mine = {e.seq: e for e in store.journal(shipped[0].seq - 1, len(shipped))}
    for entry in shipped:
        ours = mine.get(entry.seq)
        if ours is None or (ours.op, ours.memory_id, ours.ts) != (entry.op, entry.memory_id,
                                                                  entry.ts):
            held = f"{ours.op} {ours.memory_id} at {ours.ts}" if ours else "nothing"
            return (f"seq {entry.seq} is {entry.op} {entry.memory_id} at {entry.ts} in the "
                    f"shipped journal, {held} in this store's")
    return None


def run_catch_up(store: Store, settings: Settings, embedder: Embedder, *,
                 destinations: list[Destination] | None = None,
                 progress: Progress | None = None, high_water: int = 0) -> CatchUpReport:
    """Replay onto `store` the shipped entries of its own lineage after its own seq, from the
    destination whose chain reaches furthest. `high_water`: the seq the lineage is known to
    have reached (the guard's ledger); numbering continues past it, so a seq acknowledged but
    never shipped is reported lost and never handed out twice."""
    progress = progress or NoProgress()
    meta = store.meta()
    own = store.last_seq()
    dests = destinations if destinations is not None else open_destinations(settings)
    secret = settings.backup_encryption_key
    cipher = cipher_for(secret.get_secret_value() if secret else None)
    best: tuple[Chain, Destination] | None = None
    for dest in dests:
        try:
            chain = _chain(dest, meta.lineage_id, own, cipher)
        except RestoreRefused:
            raise
        except MemvaultError as exc:
            log.error("catch-up: cannot read the journal in %s: %s", dest, exc)
            continue
        if chain is None:
            continue
        fork = diverging(store, chain, own)
        if fork:
            raise RestoreRefused(
                f"catch-up refused: the store's journal and the one shipped to {dest} differ "
                f"({fork}); another writer forked lineage {meta.lineage_id}",
                hint="restore the newest backup into an empty database "
                     "(`memvault restore latest --dry-run`), or keep this store with "
                     "`memvault adopt`")
        for fault in chain.faults:
            log.error("catch-up: the journal in %s stops early: %s", dest, fault)
        if best is None or chain.upto_seq > best[0].upto_seq:
            best = (chain, dest)
    if best is None or best[0].upto_seq <= own:
        if high_water > own:
            raise RestoreRefused(
                f"catch-up: lineage {meta.lineage_id} reached seq {high_water}, the store ends "
                f"at {own} and no shipped journal reaches further",
                hint="restore the newest backup (`memvault restore latest --dry-run`), or "
                     "accept this store with `memvault adopt`")
        return CatchUpReport(meta.lineage_id, own, 0, own, None)
    chain, dest = best
    missing: list[JournalEntry] = [e for e in chain.all_entries() if e.seq > own]
    key = meta.active_embedder or embedder.identity().key
    replayed = replay(store, embedder, missing, key, progress)
    differences = check_replayed(store, missing)
    if differences:
        raise RestoreRefused(
            f"catch-up: after replaying seqs {own + 1}..{chain.upto_seq} the store does not "
            f"hold what the journal says: {'; '.join(differences)}",
            hint="restore the newest backup into an empty database instead")
    # Numbering continues after the shipped journal and the known high water: no seq handed
    # out before (shipped or lost) is handed out again.
    store.advance_seq(max(chain.upto_seq, high_water))
    upto = store.last_seq()
    store.set_meta(MetaKey.RESTORED_FROM, {
        "restore_id": uuid.uuid4().hex, "backup": CATCH_UP, "destination": dest.url,
        "seq": own, "replayed_upto": upto, "at": None, "finished_at": utc_now()})
    log.warning("caught up lineage %s from seq %d to %d: %d journal entries from %s replayed",
                meta.lineage_id, own, upto, replayed, dest)
    if high_water > chain.upto_seq:
        log.error("catch-up: seqs %d..%d of lineage %s were acknowledged but never shipped; "
                  "they are lost", chain.upto_seq + 1, high_water, meta.lineage_id)
    return CatchUpReport(meta.lineage_id, own, replayed, chain.upto_seq, dest.url, high_water)
