"""`memvault backup create|list|verify|prune` and `memvault restore`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from memvault.cli.context import overrides
from memvault.cli.output import (
    JsonOption,
    console,
    err_console,
    fails_with_exit,
    print_error,
    print_json,
    print_table,
)
from memvault.cli.safety import NoSafetySnapshotOption, safety_snapshot

backup_app = typer.Typer(help="Create, list, verify and prune backups.", no_args_is_help=True)


class RichProgress:
    """The backup package's Progress protocol drawn as Rich bars on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def task(self, description: str, total: int | None) -> Any:
        task_id = self._progress.add_task(description, total=total)
        return lambda n: self._progress.advance(task_id, n)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Any]:
    if not enabled:
        from memvault.progress import NoProgress

        yield NoProgress()
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        yield RichProgress(progress)


def _settings(ctx: typer.Context) -> Any:
    from memvault.config import load_settings

    return load_settings(overrides(ctx))


def _cipher(settings: Any) -> Any:
    from memvault.backup.crypto import cipher_for

    secret = settings.backup_encryption_key
    return cipher_for(secret.get_secret_value() if secret else None)


@backup_app.command("create")
@fails_with_exit(1)
def backup_create(
    ctx: typer.Context,
    accept_drop: bool = typer.Option(False, "--accept-drop",
                                     help="Accept a large drop in memories as intended."),
    as_json: bool = JsonOption,
) -> None:
    """Snapshot the store to every destination, read it back and validate it."""
    from memvault.backup import all_valid, create_backup, not_valid
    from memvault.store import open_store
    from memvault.store.writer_lock import hold_writer_lock

    settings = _settings(ctx)
    store = open_store(settings)
    try:
        # Never beside a running server's shipper (a SQLite store has one writer process).
        lock = hold_writer_lock(store, "memvault backup create")
        try:
            with progress_bars(not as_json) as progress:
                results = create_backup(store, settings, accept_drop=accept_drop,
                                        progress=progress)
        finally:
            if lock is not None:
                lock.release()
    finally:
        store.close()
    if as_json:
        print_json({"results": [r.to_json() for r in results]})
    else:
        print_table("backup", ["destination", "id", "status", "memories", "seq", "why"],
                    [[r.destination, r.id, r.status, r.manifest.total if r.manifest else "",
                      r.manifest.seq if r.manifest else "", "; ".join(r.reasons)]
                     for r in results])
    bad = not_valid(results)
    if not all_valid(results):
        print_error(f"{len(bad)} of {len(results)} destinations hold no valid backup from this "
                    "run", "read the reasons above; `memvault backup list` shows all backups")
        raise typer.Exit(1)


@backup_app.command("list")
@fails_with_exit(1)
def backup_list(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Every backup in every destination, oldest (lowest seq) first, with status and counts."""
    from memvault.backup import list_backups, open_destinations

    settings = _settings(ctx)
    rows = []
    for dest in open_destinations(settings):
        rows += [e.summary() for e in list_backups(dest)]
    if as_json:
        print_json({"backups": rows})
        return
    print_table("backups", ["id", "destination", "status", "created", "seq", "memories", "why"],
                [[r["id"], r["destination"], r["status"], r["created_at"], r["seq"], r["total"],
                  "; ".join(r["reasons"])] for r in rows])


@backup_app.command("verify")
@fails_with_exit(1)
def backup_verify(
    ctx: typer.Context,
    backup_id: str | None = typer.Argument(None, help="Backup id (default: the newest valid)."),
    every: bool = typer.Option(False, "--all", help="Verify every backup."),
    read_data: bool = typer.Option(False, "--read-data",
                                   help="Read every file in full and check its sha256."),
    as_json: bool = JsonOption,
) -> None:
    """Check structure and journal chain, or (--read-data) every byte. Exit 1 on any fault."""
    from memvault.backup import open_destinations, verify_backups

    if backup_id and every:
        raise typer.BadParameter("give a backup id or --all, not both")
    settings = _settings(ctx)
    report = verify_backups(open_destinations(settings), _cipher(settings),
                            backup_id=backup_id, every=every, read_data=read_data)
    if as_json:
        print_json(report.to_json())
    else:
        print_table("verified", ["id", "destination", "status", "memories", "faults"],
                    [[b["id"], b["destination"], b["status"], b["total"], len(b["faults"])]
                     for b in report.checked])
        for journal in report.journal:
            if journal.get("segments"):
                console.print(f"journal {journal['lineage_id']} in {journal['destination']}: "
                              f"{journal['segments']} segments, seq {journal['from_seq']} to "
                              f"{journal['upto_seq']}", highlight=False)
        for fault in report.faults:
            print_error(str(fault))
    if not report.ok:
        raise typer.Exit(1)


@backup_app.command("prune")
@fails_with_exit(1)
def backup_prune(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, delete nothing."),
    as_json: bool = JsonOption,
) -> None:
    """Apply MEMVAULT_BACKUP_KEEP to valid backups; the newest valid one is always kept."""
    from memvault.backup import apply_prune, open_destinations, plan_prune
    from memvault.backup.destinations import DeletesRefused

    settings = _settings(ctx)
    plans = [plan_prune(dest, settings.backup_keep) for dest in open_destinations(settings)]
    if not dry_run:
        for plan in plans:
            # Refused keys are recorded in the plan (and logged); the others are still pruned.
            with contextlib.suppress(DeletesRefused):
                apply_prune(plan)
    refused = sum(len(p.not_deleted) for p in plans)
    if as_json:
        print_json({"dry_run": dry_run, "plans": [p.to_json() for p in plans]})
    else:
        for plan in plans:
            deleted = set(plan.deleted_ids())
            rows = [[i, "keep", ", ".join(r)] for i, r in plan.keep.items()]
            rows += [[i, "would delete" if dry_run else
                      "deleted" if i in deleted else "NOT deleted", why]
                     for i, why in plan.delete.items()]
            print_table(f"retention in {plan.destination.url}", ["id", "action", "why"],
                        sorted(rows))
            segments = [k for k in plan.segments if k not in plan.not_deleted]
            segments = plan.segments if dry_run else segments
            if segments:
                verb = "would delete" if dry_run else "deleted"
                console.print(f"{verb} {len(segments)} journal segments older than every "
                              "kept point-in-time window", highlight=False)
            for key, why in plan.not_deleted.items():
                print_error(f"{key} in {plan.destination.url} was NOT deleted: {why}")
    if refused:
        print_error(f"{refused} object(s) were NOT deleted: the backups and journal segments "
                    "they belong to are still there",
                    "grant the backup credentials delete permission (s3:DeleteObject) or make "
                    "the files writable, then run `memvault backup prune` again")
        raise typer.Exit(1)


def restore(
    ctx: typer.Context,
    which: str = typer.Argument("latest", help="'latest' or a backup id."),
    at: str | None = typer.Option(None, "--at", help="Point in time, ISO-8601."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, change nothing."),
    yes: bool = typer.Option(False, "--yes", help="Replace the memories of a non-empty store."),
    lineage: str | None = typer.Option(
        None, "--lineage", help="Restore this lineage (store) when the destinations hold "
        "several and none is this store's own."),
    allow_loss: bool = typer.Option(
        False, "--allow-loss", help="Restore what is there even when it ends short of what "
        "the backups promise; the lost seqs and namespaces are printed."),
    catch_up: bool = typer.Option(
        False, "--catch-up", help="Keep the store and replay onto it only the shipped journal "
        "of its own lineage after its own seq (a standby promoted behind); refused where the "
        "two journals differ."),
    to_mem0: str | None = typer.Option(
        None, "--to-mem0", help="Write the backup into mem0's own pgvector table at this DSN "
        "instead (docs/guard-mem0.md)."),
    collection: str = typer.Option("memories", "--collection",
                                   help="mem0's table, with --to-mem0."),
    no_safety_snapshot: bool = NoSafetySnapshotOption,
    as_json: bool = JsonOption,
) -> None:
    """Restore a backup (and the shipped journal up to --at) into the configured store.

    Over a non-empty store (--yes) a safety snapshot of it is taken first."""
    if to_mem0:
        from memvault.cli.watch import restore_into_mem0

        restore_into_mem0(_settings(ctx), to_mem0, collection, which, at, yes=yes,
                          lineage=lineage, allow_loss=allow_loss, dry_run=dry_run,
                          as_json=as_json, bars=progress_bars)
        return
    from memvault.backup import RestoreLoss, plan_restore, restore_incomplete, run_restore
    from memvault.backup.safety import Operation
    from memvault.embed import make_embedder
    from memvault.store import open_store
    from memvault.store.writer_lock import hold_writer_lock

    settings = _settings(ctx)
    embedder = make_embedder(settings.embedder, settings)
    configured = embedder.identity()
    store = open_store(settings)
    if catch_up:
        _catch_up(store, settings, embedder, as_json, allow_loss)
        return
    try:
        plan = plan_restore(settings, which, at, configured=configured, lineage=lineage,
                            target_lineage=store.meta().lineage_id)
        present = store.total()
        if not as_json:
            _print_plan(plan.to_json(), present)
        if dry_run:
            if as_json:
                print_json({"dry_run": True, "target_memories": present, "plan": plan.to_json()})
            if plan.loss.lost and not allow_loss:
                print_error(f"this restore would lose data: {plan.loss.describe()}",
                            "`memvault backup verify --all --read-data` shows what is damaged; "
                            "--allow-loss restores what is there")
                raise typer.Exit(1)
            return
        # Never under a running server (a SQLite store has one writer process).
        lock = hold_writer_lock(store, "memvault restore")
        try:
            safety = None
            if yes and present and not restore_incomplete(store):
                safety = safety_snapshot(store, settings, Operation.RESTORE,
                                         skip=no_safety_snapshot, as_json=as_json)
            if safety is not None and which == "latest":
                # What the plan showed is what is restored, not the safety snapshot just
                # taken (the newest of the store's own lineage now).
                which = plan.manifest.id
            with progress_bars(not as_json) as progress:
                # A large SQLite store's approximate index is built before the command ends
                # (its bar drawn here), so the server it is restored for searches at full
                # speed from its first request.
                store.show_index_builds(progress)
                # The planned lineage: the safety snapshot may have made the store's own
                # lineage one the destinations hold.
                report = run_restore(store, settings, embedder, which, at, yes=yes,
                                     progress=progress,
                                     lineage=lineage or plan.manifest.lineage_id,
                                     allow_loss=allow_loss)
        except RestoreLoss as exc:
            if as_json:  # scripts get the loss itself, not only the message
                print_json({"error": exc.code, "message": exc.message, "loss": exc.loss})
            raise
        finally:
            if lock is not None:
                lock.release()
    finally:
        store.close()
    if as_json:
        print_json(report.to_json() | {"safety_snapshot": safety})
        return
    loss = report.plan.loss
    if loss.lost:
        print_error(f"restored WITH LOSS (--allow-loss): {loss.describe()}",
                    "the lost memories are not in any readable backup; check the other "
                    "destinations and `memvault backup verify --all --read-data`")
    console.print(f"restored {report.plan.manifest.id}: {sum(report.counts.values())} "
                  f"memories, {report.replayed} journal entries replayed; counts verified",
                  highlight=False)


def _catch_up(store: Any, settings: Any, embedder: Any, as_json: bool, allow_loss: bool
              ) -> None:
    """Replay what was shipped after the store's seq. Seqs acknowledged but never shipped
    cannot come back: that exits 1 (after catching up what could be) unless --allow-loss."""
    from memvault.backup.catch_up import run_catch_up
    from memvault.backup.destinations import open_destinations
    from memvault.guard.ledger import read_ledger
    from memvault.store.writer_lock import hold_writer_lock

    try:
        dests = open_destinations(settings)
        known, _ = read_ledger(dests, store.meta().lineage_id)
        lock = hold_writer_lock(store, "memvault restore --catch-up")
        try:
            with progress_bars(not as_json) as progress:
                report = run_catch_up(store, settings, embedder, destinations=dests,
                                      progress=progress,
                                      high_water=known.seq if known else 0)
        finally:
            if lock is not None:
                lock.release()
    finally:
        store.close()
    lost = report.lost_upto > report.upto_seq
    if as_json:
        print_json(report.to_json())
    elif lost:
        print_error(f"seqs {report.upto_seq + 1}..{report.lost_upto} were acknowledged but "
                    "never shipped: they are lost (the journal interval is the RPO)",
                    "check the old primary's disk if it can still be read; --allow-loss "
                    "acknowledges the loss (exit 0)")
    if as_json:
        pass
    elif report.replayed:
        console.print(f"caught up lineage {report.lineage_id}: seqs {report.store_seq + 1}.."
                      f"{report.upto_seq}, {report.replayed} journal entries replayed",
                      highlight=False)
    else:
        console.print(f"nothing to catch up: the shipped journal ends at or before the "
                      f"store's seq {report.store_seq}", highlight=False)
    if lost and not allow_loss:
        raise typer.Exit(1)


def _print_plan(plan: dict[str, Any], present: int) -> None:
    source, journal, embed = plan["source"], plan["journal"], plan["embedder"]
    console.print(f"[bold]restore plan[/]\n  source: {source['backup']} in "
                  f"{source['destination']} (seq {source['seq']}, taken {source['created_at']})",
                  highlight=False)
    for note in plan["fallbacks"]:
        console.print(f"  skipped: {note}", highlight=False)
    console.print(f"  journal: {journal['entries']} entries replayed up to seq "
                  f"{journal['upto_seq']} ({journal['upto_ts'] or 'snapshot time'})"
                  + (f", requested --at {plan['at']}" if plan["at"] else ""), highlight=False)
    for fault in journal["faults"]:
        console.print(f"  [yellow]journal stops early:[/] {fault}", highlight=False)
    for step in journal["clock_steps_back"]:
        console.print(f"  [yellow]clock went back:[/] seq {step['seq']} is stamped {step['ts']}, "
                      f"before seq {step['previous_seq']} ({step['previous_ts']})",
                      highlight=False)
    for warning in plan["warnings"]:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
    if plan["loss"]["lost"]:
        console.print(f"  [red]loss:[/] {plan['loss']['summary']}", highlight=False)
    action = (f"re-embed with {embed['configured']}" if embed["reembed"]
              else "keep the backup's vectors")
    console.print(f"  embedder: backup {embed['backup']}, configured {embed['configured']}: "
                  f"{action}", highlight=False)
    console.print(f"  target holds {present} memories", highlight=False)
    print_table(None, ["namespace", "in backup", "after restore"],
                [[ns, plan["counts_in_backup"].get(ns, 0), n]
                 for ns, n in plan["counts_after_restore"].items()])
