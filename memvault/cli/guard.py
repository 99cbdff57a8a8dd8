"""`memvault adopt`: accept the configured store as the guarded one (explicit and logged).

The guard refuses a store that is not the one its ledger knows (StoreReplaced) until either the
configuration points back at the right store or an operator adopts the new one here. Adoption
writes a ledger record naming what it replaced; it never changes a memory.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import typer

from memvault.cli.output import JsonOption, console, print_json
from memvault.cli.safety import NoSafetySnapshotOption, safety_snapshot
from memvault.errors import MemvaultError

log = logging.getLogger("memvault.guard")


class AdoptRefused(MemvaultError):
    code = "adopt_refused"


def adopt(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", help="Adopt without asking."),
    reason: str = typer.Option("", "--reason", help="Why; kept in the ledger."),
    no_safety_snapshot: bool = NoSafetySnapshotOption,
    as_json: bool = JsonOption,
) -> None:
    """Accept the configured store as the start of a new guarded lineage (after a safety
    snapshot of it)."""
    from memvault.backup.destinations import open_destinations
    from memvault.backup.safety import Operation
    from memvault.cli.context import overrides
    from memvault.config import load_settings
    from memvault.guard.api import current_verdict, known_now, read_observation
    from memvault.guard.checks import HOLDING
    from memvault.guard.ledger import observe, write_ledger
    from memvault.memory import Memory
    from memvault.store import MetaKey

    settings = load_settings(overrides(ctx))
    destinations = open_destinations(settings)
    with Memory(settings, actor="cli") as memory:
        obs = read_observation(memory)
        known, problems = known_now(obs, destinations)
        ledger = known.ledger
        verdict, _ = current_verdict(memory)
        replaced = {f.alert for f in verdict.firing()} & HOLDING
        plan: dict[str, Any] = {
            "store": {"store_id": obs.store_id, "lineage_id": obs.lineage_id,
                      "memories": obs.total, "seq": obs.seq, "location": obs.location},
            "ledger": ledger.to_json() if ledger else None,
            "ledger_problems": problems,
            "needed": bool(replaced),
        }
        if not replaced:
            plan["result"] = "nothing to adopt: the store is the one the ledger knows"
            _show(plan, as_json)
            return
        if not yes and (as_json or not typer.confirm(
                f"Adopt store {obs.store_id} ({obs.total} memories) in place of lineage "
                f"{ledger.lineage_id if ledger else '?'} "
                f"({ledger.memories if ledger else '?'} memories)?")):
            raise AdoptRefused("not adopted", hint="re-run with --yes to adopt")
        lineage = obs.lineage_id
        if ledger is not None and lineage == ledger.lineage_id:
            # A rolled-back store: its seqs would collide with the shipped journal's.
            lineage = str(uuid.uuid4())
            memory.store.set_meta(MetaKey.LINEAGE_ID, lineage)
        try:  # under the lineage it is adopted as: never shipped into the one it replaces
            plan["safety_snapshot"] = safety_snapshot(memory.store, settings, Operation.ADOPT,
                                                      skip=no_safety_snapshot, as_json=as_json)
        except MemvaultError:
            memory.store.set_meta(MetaKey.LINEAGE_ID, obs.lineage_id)
            raise
        note = (f"adopted{': ' + reason if reason else ''}; replaces lineage "
                f"{ledger.lineage_id if ledger else '-'} (store "
                f"{ledger.store_id if ledger else '-'}, {ledger.memories if ledger else 0} "
                f"memories at seq {ledger.seq if ledger else 0})")
        record = observe(None, lineage_id=lineage, store_id=obs.store_id, backend=obs.backend,
                         location=obs.location, active_embedder=obs.active_embedder,
                         seq=obs.seq, namespaces=obs.namespaces, event="adopted", note=note)
        failures = write_ledger(destinations, record)
        if len(failures) == len(destinations):
            raise AdoptRefused("the ledger could not be written: " + "; ".join(failures),
                               hint="fix the backup destinations (MEMVAULT_BACKUP_URLS)")
        log.warning("store %s adopted as lineage %s: %s", obs.store_id, lineage, note)
        plan["result"] = note
        plan["lineage_id"] = lineage
        plan["ledger_write_problems"] = failures
    _show(plan, as_json)


def _show(plan: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(plan)
        return
    store = plan["store"]
    console.print(f"store {store['store_id']} ({store['memories']} memories, journal seq "
                  f"{store['seq']}, {store['location']})", highlight=False)
    for problem in plan["ledger_problems"]:
        console.print(f"[yellow]ledger:[/] {problem}", highlight=False)
    console.print(plan["result"], highlight=False)
