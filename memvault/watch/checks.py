"""What the watcher concludes from mem0's table as it is and the ledger of its lineage: one
finding per alert, a pure function (testable without a database or a clock).

- no ledger yet: this table starts the record;
- the table is another one than the ledger's (cluster system id, database oid, table oid):
  StoreReplaced (a new database under new credentials, a table dropped and made again by
  mem0's `reset`), and StoreEmpty when it holds nothing;
- the same table, empty where the ledger knows memories: StoreEmpty (truncated, deleted);
- the same table, down by more than MEMVAULT_ALERT_DROP_RATIO of the last 24 h's peak:
  MemoryCountDrop (a warning: the deletes are captured and shipped);
- the vector column's dimension is not the ledger's: EmbedderMismatch (mem0 now runs another
  embedding model, and the vectors in the backups are not searchable by it as they are).
A table with another identity holding exactly what the mirror holds (a dump put back in a new
cluster, unchanged) is the same store moved: the caller accepts it after comparing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from memvault.guard.alerts import Alert
from memvault.guard.checks import Finding, Verdict, count_dropped
from memvault.guard.ledger import LedgerRecord
from memvault.watch.payload import mem0_identity
from memvault.watch.table import TableIdentity

# While one of these fires, nothing is captured, snapshotted or recorded: an emptied or
# replaced table must not be written into the mirror's journal or backed up over good backups.
HOLDING = frozenset({Alert.StoreEmpty, Alert.StoreReplaced, Alert.EmbedderMismatch,
                     Alert.StoreUnreachable})
WATCHED = (Alert.StoreEmpty, Alert.StoreReplaced, Alert.MemoryCountDrop, Alert.EmbedderMismatch,
           Alert.StoreUnreachable)


@dataclass(frozen=True)
class TableObservation:
    identity: TableIdentity
    total: int
    collection: str

    @property
    def embedder_key(self) -> str | None:
        dims = self.identity.dims
        return mem0_identity(self.collection, dims).key if dims else None


def assess_table(obs: TableObservation, ledger: LedgerRecord | None, drop_ratio: float,
                 now: datetime | None = None, *, same_content: bool = False) -> Verdict:
    """`same_content`: the caller compared a table of another identity with the mirror and
    found every row as the mirror holds it."""
    now = now or datetime.now(UTC)
    findings = {name: Finding(name, False, "as expected") for name in WATCHED}
    if ledger is None or not ledger.has_data:
        return Verdict(list(findings.values()), accept="first-seen")
    ident = obs.identity
    known = (f"the ledger knows {ledger.memories} memories in {ledger.location or 'the store'}"
             f" ({ledger.store_id}) on {ledger.observed_at}")
    accept: str | None = "observed"
    note = None
    moved = not ident.same_place(ledger.store_id)
    if moved and obs.total and same_content:
        note = f"mem0's table moved to {ident.describe()} with the same memories"
    elif moved:
        accept = None
        findings[Alert.StoreReplaced] = Finding(Alert.StoreReplaced, True, (
            f"mem0's table is not the guarded one: now {ident.describe()} ({obs.total} "
            f"memories), but {known}"), {
                "store_id": ident.store_id, "ledger_store_id": ledger.store_id,
                "hint": "point mem0 (and --dsn) back at the guarded database, or put the "
                "memories back: `memvault restore latest --to-mem0 DSN` (docs/guard-mem0.md)"})
    if obs.total == 0:
        accept = None
        where = "does not exist" if ident.table_oid is None else "is empty"
        findings[Alert.StoreEmpty] = Finding(Alert.StoreEmpty, True, (
            f"mem0's table {obs.collection} {where}, but {known}"), {
                "hint": "if mem0 now points at a new database or credentials, fix its "
                "configuration, or restore: `memvault restore latest --to-mem0 DSN`"})
    elif not moved:
        baseline = count_dropped(ledger, obs.total, now, drop_ratio)
        if baseline:
            findings[Alert.MemoryCountDrop] = Finding(Alert.MemoryCountDrop, True, (
                f"mem0's table holds {obs.total} memories, down from {baseline} within 24 h "
                f"(more than {drop_ratio:.0%})"), {
                    "memories": obs.total, "peak_24h": baseline,
                    "hint": "the deletes are in the shipped journal; to undo them: `memvault "
                    "restore ID --at TIME --to-mem0 DSN --yes`"})
    expected, now_key = ledger.active_embedder, obs.embedder_key
    if expected and now_key and expected != now_key:
        accept = None
        findings[Alert.EmbedderMismatch] = Finding(Alert.EmbedderMismatch, True, (
            f"mem0's vector column is now {now_key.rsplit(':', 1)[-1]}-dimensional, the "
            f"guarded vectors are {expected.rsplit(':', 1)[-1]}-dimensional ({expected}): mem0 "
            "runs another embedding model"), {
                "configured": now_key, "expected": expected,
                "hint": "set MEMVAULT_EMBEDDER to mem0's new model and run `memvault restore "
                "latest --to-mem0 DSN --yes`: the memories are re-embedded"})
    return Verdict(list(findings.values()), accept=accept, note=note)
