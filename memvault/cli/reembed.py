"""`memvault reembed --embedder SPEC`: move the store to another embedder while it serves."""

from __future__ import annotations

from typing import Any

import typer

from memvault.cli.context import overrides
from memvault.cli.output import JsonOption, console, print_error, print_json
from memvault.cli.safety import NoSafetySnapshotOption, safety_snapshot


def reembed(
    ctx: typer.Context,
    spec: str = typer.Option(..., "--embedder",
                             help="Target embedder: local, openai:<model> or ollama:<model> "
                             "(same syntax as MEMVAULT_EMBEDDER)."),
    embedder_url: str | None = typer.Option(
        None, "--embedder-url", help="Target's endpoint (default MEMVAULT_EMBEDDER_URL)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, change nothing."),
    switch: bool = typer.Option(True, "--switch/--no-switch",
                                help="Make the target the store's active embedder once every "
                                "memory has a vector from it (default), or only add vectors."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before starting."),
    drop_old: bool = typer.Option(False, "--drop-old",
                                  help="Not available yet: old vectors are always kept."),
    batch: int = typer.Option(256, "--batch", min=1, max=1000, help="Texts per embed call."),
    no_safety_snapshot: bool = NoSafetySnapshotOption,
    as_json: bool = JsonOption,
) -> None:
    """Switch to another embedder online: backfill its vectors, then switch.

    The store keeps serving meanwhile; a stopped run resumes; old vectors are kept (going back
    is a config change)."""
    from memvault.config import load_settings
    from memvault.embed import make_embedder
    from memvault.errors import EmbedderError
    from memvault.memory.reembed import ReembedError, plan_reembed
    from memvault.memory.reembed import reembed as run_reembed
    from memvault.store import open_store

    if drop_old:
        raise ReembedError(
            "--drop-old is not available yet: memvault keeps the old vectors (they cost disk, "
            "not search time, and let you switch back by setting MEMVAULT_EMBEDDER)",
            hint="run without --drop-old")
    settings = load_settings(overrides(ctx, embedder=spec, embedder_url=embedder_url))
    target = make_embedder(settings.embedder, settings)
    store = open_store(settings)
    try:
        try:
            identity = target.identity()
        except EmbedderError as exc:  # the message names the URL it tried
            raise ReembedError(f"the target embedder {spec} cannot be used: {exc.message}; "
                               "nothing was changed", hint=exc.hint
                               or "check MEMVAULT_EMBEDDER_URL and the model name") from exc
        plan = plan_reembed(store, identity)
        if dry_run:
            if as_json:
                print_json({"dry_run": True, "switch": switch, "plan": plan.to_json()})
            else:
                _print_plan(plan.to_json(), switch)
            return
        if not as_json:
            _print_plan(plan.to_json(), switch)
        if not yes and not as_json and plan.to_embed and not typer.confirm(
                "start re-embedding?", default=True, err=True):
            raise typer.Exit(1)
        from memvault.backup.safety import Operation
        from memvault.cli.backup import progress_bars

        safety = None
        if switch and plan.to_json()["switch_needed"]:  # the switch changes what search uses
            safety = safety_snapshot(store, settings, Operation.REEMBED, skip=no_safety_snapshot,
                                     as_json=as_json)
        with progress_bars(not as_json) as progress:
            report = run_reembed(store, target, batch=batch, switch=switch, progress=progress)
    finally:
        store.close()
    result = report.to_json() | {"safety_snapshot": safety}
    if as_json:
        print_json(result)
    else:
        _print_report(result, spec)
    if not report.complete:
        cov = result["coverage"]
        print_error(
            f"{cov['memories'] - cov['have']} of {cov['memories']} memories still lack a vector "
            f"from {cov['key']} (written meanwhile by processes still using "
            f"{report.plan.active})" + ("; the store was switched" if report.switched else ""),
            f"restart every memvault process with MEMVAULT_EMBEDDER={spec}, then run "
            f"`memvault reembed --embedder {spec}` again (it embeds only what is missing)")
        raise typer.Exit(1)


def _print_plan(plan: dict[str, Any], switch: bool) -> None:
    dims = plan["dims"]
    console.print(
        f"[bold]re-embed plan[/]\n"
        f"  from: {plan['active']} ({dims['from']} dims)\n"
        f"  to:   {plan['target']['key']} ({dims['to']} dims, fingerprint "
        f"{plan['target']['fingerprint']})\n"
        f"  memories: {plan['memories']}, already with a vector from the target: "
        f"{plan['have_target_vector']}, to embed: {plan['to_embed']}"
        + (" (resuming an earlier run)" if plan["resumes_earlier_run"] else "") + "\n"
        "  then: " + ("switch the store's active embedder" if switch and plan["switch_needed"]
                       else "no switch" if plan["switch_needed"] else "already active"),
        highlight=False)


def _print_report(result: dict[str, Any], spec: str) -> None:
    cov = result["coverage"]
    console.print(
        f"re-embedded {result['embedded']} memories, {result['caught_up']} more written "
        f"meanwhile, in {result['seconds']:.1f}s; {cov['have']} of {cov['memories']} memories "
        f"have a vector from {cov['key']}", highlight=False)
    if result["switched"]:
        console.print(
            f"the store's active embedder is now {result['active']} (was {result['previous']}).\n"
            f"next: restart every memvault process with MEMVAULT_EMBEDDER={spec} (processes "
            f"still on the old model report EmbedderMismatch until then). To go back, set "
            f"MEMVAULT_EMBEDDER to the old model and restart: its vectors are kept.",
            highlight=False)
    elif result["active"] != cov["key"] and cov["complete"]:
        console.print(f"not switched: restart memvault with MEMVAULT_EMBEDDER={spec} to switch "
                      "(it takes over since every memory has a vector from it)", highlight=False)
