"""Replaying shipped journal entries into a restored store, then checking the store holds
exactly what they say (the chain's promise), memory by memory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from memvault.backup.errors import BackupError
from memvault.errors import MemvaultError
from memvault.progress import Progress
from memvault.store import JournalEntry, MemoryRecord

if TYPE_CHECKING:
    from memvault.embed import Embedder
    from memvault.store import Store

log = logging.getLogger("memvault.backup.restore")
# The fields a memory must hold exactly as the journal wrote them.
CHECKED_FIELDS = tuple(MemoryRecord.__dataclass_fields__)


def replay(store: Store, embedder: Embedder, entries: list[JournalEntry], key: str,
           progress: Progress) -> int:
    advance = progress.task("replaying the journal", len(entries))
    done = 0
    pending: list[MemoryRecord] = []

    def flush() -> None:
        if pending:
            vectors = embedder.embed([r.memory for r in pending])
            store.add(list(pending), vectors, key, "restore")
            advance(len(pending))
            pending.clear()

    for entry in entries:
        if entry.op == "ADD" and entry.after:
            pending.append(MemoryRecord.from_dict(entry.after))
            if len(pending) >= 256:
                flush()
            done += 1
            continue
        flush()
        try:
            if entry.op == "UPDATE" and entry.after:
                record = MemoryRecord.from_dict(entry.after)
                if store.get(record.id) is None:  # the check after replay names it
                    log.error("journal seq %d updates %s, which is not in the target",
                              entry.seq, record.id)
                else:
                    before = (entry.before or {}).get("memory")
                    vector = embedder.embed([record.memory])[0] \
                        if before != record.memory else None
                    store.update(record, vector, key if vector is not None else "", "restore")
            elif entry.op == "DELETE":
                store.delete([entry.memory_id], "restore")
        except MemvaultError as exc:
            raise BackupError(f"replaying journal seq {entry.seq} ({entry.op} "
                              f"{entry.memory_id}) failed: {exc}",
                              hint="the target stays marked incomplete; re-run the restore"
                              ) from exc
        done += 1
        advance(1)
    flush()
    return done


def promised_state(entries: list[JournalEntry]) -> dict[str, dict[str, Any] | None]:
    """Each memory the entries touch -> what it must hold after them (None: deleted)."""
    state: dict[str, dict[str, Any] | None] = {}
    for entry in entries:
        state[entry.memory_id] = entry.after if entry.op in ("ADD", "UPDATE") else None
    return state


def check_replayed(store: Store, entries: list[JournalEntry], limit: int = 10) -> list[str]:
    """Where the store differs from what the replayed entries promise (empty: it holds it)."""
    problems: list[str] = []
    for memory_id, wanted in promised_state(entries).items():
        got = store.get(memory_id)
        if wanted is None:
            if got is not None:
                problems.append(f"{memory_id} should be deleted and is present")
        elif got is None:
            problems.append(f"{memory_id} is missing")
        else:
            expected = MemoryRecord.from_dict(wanted)
            differs = [f for f in CHECKED_FIELDS
                       if getattr(got, f) != getattr(expected, f)]
            if differs:
                problems.append(f"{memory_id} differs in {', '.join(differs)}")
        if len(problems) >= limit:
            problems.append("(first differences only)")
            break
    return problems
