"""Which lineages in the backup destinations are watched mem0 tables: the ledger of each names
its backend and table. Used where the choice is not given: `restore --to-mem0 latest` with
backups of several stores in one place, and a watcher whose mirror is new (its data volume
lost with mem0's in a `docker compose down -v`) looking for the lineage it continues."""

from __future__ import annotations

from memvault.backup.candidates import lineages, list_all
from memvault.backup.destinations import Destination
from memvault.errors import MemvaultError
from memvault.guard.ledger import read_ledger
from memvault.guard.lineages import WATCHED_MEM0

BACKEND = WATCHED_MEM0  # the ledger's `backend` for a watched mem0 table


def table_of(location: str) -> str:
    """The table a watched ledger record names (`<dsn> table <name> (<identity>)`)."""
    return location.split(" (", 1)[0].rpartition(" table ")[2]


def watched_lineages(destinations: list[Destination], collection: str) -> list[str]:
    """The lineages holding valid backups whose ledger is a watch of mem0's `collection`."""
    entries, _ = list_all(destinations)
    found = []
    for lineage_id in sorted(lineages(entries)):
        try:
            record, _ = read_ledger(destinations, lineage_id)
        except MemvaultError:
            continue
        if record is not None and record.backend == BACKEND and \
                table_of(record.location) == collection:
            found.append(lineage_id)
    return found
