"""`memvault import mem0 --dsn|--dump|--url`, `memvault import jsonl FILE`, `memvault export`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

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

import_app = typer.Typer(help="Import memories from mem0 or from a `memvault export` file.",
                         no_args_is_help=True)

DryRunOption = typer.Option(False, "--dry-run",
                            help="Read and check the source, print the plan, write nothing.")
StrictOption = typer.Option(False, "--strict", help="Exit 1 when any row is rejected.")
ExamplesOption = typer.Option(20, "--show", min=0, help="Rejected/skipped rows listed (all are "
                              "counted).")


@import_app.command("mem0")
@fails_with_exit(1)
def import_mem0(
    ctx: typer.Context,
    dsn: str | None = typer.Option(None, "--dsn", help="mem0's PostgreSQL, postgresql://..."),
    dump: Path | None = typer.Option(None, "--dump", help="A pg_dump file of mem0's database "
                                     "(plain SQL, .gz/.zst, or -Fc/-Fd/-Ft via pg_restore)."),
    url: str | None = typer.Option(None, "--url", help="mem0's REST server, http://host:8000"),
    collection: str = typer.Option("memories", "--collection",
                                   help="mem0's table (server: memories, library: mem0)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="MEM0_API_KEY",
                                       help="--url: mem0's admin API key."),
    user_id: list[str] = typer.Option([], "--user-id", help="--url: users to read "
                                      "(default: every entity from GET /entities)."),
    agent_id: list[str] = typer.Option([], "--agent-id", help="--url: agents to read."),
    run_id: list[str] = typer.Option([], "--run-id", help="--url: runs to read."),
    keep_vectors: bool = typer.Option(False, "--keep-vectors",
                                      help="Keep mem0's vectors (checked) instead of "
                                      "re-embedding every text."),
    source_embedder: str | None = typer.Option(
        None, "--source-embedder", help="With --keep-vectors: the model that made mem0's "
        "vectors (local, openai:<model>, ollama:<model>); must be the configured embedder."),
    source_embedder_url: str | None = typer.Option(
        None, "--source-embedder-url", help="Its endpoint (default MEMVAULT_EMBEDDER_URL)."),
    probe_sample: int = typer.Option(64, "--probe-sample", min=1, max=10_000,
                                     help="Texts re-embedded to check kept vectors."),
    pg_restore: str | None = typer.Option(None, "--pg-restore",
                                          help="pg_restore binary for -Fc/-Fd/-Ft dumps."),
    dry_run: bool = DryRunOption,
    strict: bool = StrictOption,
    show: int = ExamplesOption,
    as_json: bool = JsonOption,
) -> None:
    """Import a mem0 store: every row imported, skipped as a duplicate, or rejected with the
    reason. Texts are re-embedded with MEMVAULT_EMBEDDER unless --keep-vectors."""
    from memvault.migrate import Mem0Dump, Mem0Rest, Mem0Table

    given = [name for name, value in (("--dsn", dsn), ("--dump", dump), ("--url", url))
             if value]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --dsn, --dump or --url"
                                 + (f" (got {', '.join(given)})" if given else ""))
    if (user_id or agent_id or run_id) and not url:
        raise typer.BadParameter("--user-id/--agent-id/--run-id only apply to --url")
    source: Any
    if dsn:
        source = Mem0Table(dsn, collection)
    elif dump:
        source = Mem0Dump(dump, collection, pg_restore)
    else:
        assert url is not None
        entities = [("user", v) for v in user_id] + [("agent", v) for v in agent_id] + \
            [("run", v) for v in run_id]
        source = Mem0Rest(url, api_key, entities)
    _run(ctx, source, keep_vectors=keep_vectors, source_embedder=source_embedder,
         source_embedder_url=source_embedder_url, probe_sample=probe_sample, dry_run=dry_run,
         strict=strict, show=show, as_json=as_json, actor="import:mem0")


@import_app.command("jsonl")
@fails_with_exit(1)
def import_jsonl(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A `memvault export` file (.jsonl or .jsonl.zst)."),
    dry_run: bool = DryRunOption,
    strict: bool = StrictOption,
    show: int = ExamplesOption,
    as_json: bool = JsonOption,
) -> None:
    """Import a `memvault export` file. Its vectors are kept when they come from the configured
    embedder (the export names it with probe vectors); otherwise texts are re-embedded."""
    from memvault.migrate import JsonlFile

    _run(ctx, JsonlFile(file), keep_vectors=False, source_embedder=None,
         source_embedder_url=None, probe_sample=64, dry_run=dry_run, strict=strict, show=show,
         as_json=as_json, actor="import:jsonl")


def _run(ctx: typer.Context, source: Any, *, keep_vectors: bool, source_embedder: str | None,
         source_embedder_url: str | None, probe_sample: int, dry_run: bool, strict: bool,
         show: int, as_json: bool, actor: str) -> None:
    from memvault.cli.backup import progress_bars
    from memvault.config import load_settings
    from memvault.embed import make_embedder
    from memvault.memory import Memory
    from memvault.migrate import ImportOptions, run_import

    settings = load_settings(overrides(ctx))
    if source_embedder and not keep_vectors:
        raise typer.BadParameter("--source-embedder only applies with --keep-vectors")
    declared = None
    if source_embedder:
        declared_settings = load_settings(overrides(
            ctx, embedder=source_embedder, embedder_url=source_embedder_url))
        declared = make_embedder(source_embedder, declared_settings)
    options = ImportOptions(keep_vectors=keep_vectors, source_embedder=declared,
                            probe_sample=probe_sample, dry_run=dry_run, actor=actor,
                            max_examples=show)
    with Memory(settings, actor=actor) as memory, progress_bars(not as_json) as progress:
        report = run_import(memory, source, options, progress)
    result = report.to_json()
    if as_json:
        print_json(result)
    else:
        _print_report(result, show)
    if not report.ok:
        if report.dry_run:
            hint = "the import would fail: fix the faults above first"
        elif "nothing was written" in report.faults:
            hint = "nothing was written; fix the faults above and run the import again"
        else:
            hint = "re-run the same import: what is already stored is skipped as a duplicate"
        faults = [f for f in report.faults if f != "nothing was written"]
        print_error("the import is not complete: " + ("; ".join(faults) or "not verified"),
                    hint)
        raise typer.Exit(1)
    if strict and report.rejected:
        print_error(f"{len(report.rejected)} rows were rejected (--strict)",
                    "fix or drop those rows in the source, or run without --strict")
        raise typer.Exit(1)


def _print_report(result: dict[str, Any], show: int) -> None:
    dry = not result["written"]
    source = result["source"]
    vectors = result["vectors"]
    title = "import plan" if result["dry_run"] else "import"
    console.print(f"[bold]{title}[/] from {source['kind']} "
                  f"{source['location']} into {result['target'].get('store')} "
                  f"({result['target'].get('memories_before')} memories before)",
                  highlight=False)
    dims = ", ".join(f"{k}: {v}" for k, v in result["dims_found"].items())
    console.print(f"  vectors in the source (dims: rows): {dims}", highlight=False)
    mode = vectors.get("mode", "")
    console.print(f"  vectors: {mode}; {vectors.get('kept', 0)} kept, {vectors.get('to_embed', 0)}"
                  f" {'to embed' if dry else 'embedded'} with {vectors.get('embedder')}",
                  highlight=False)
    if "probe" in vectors:
        p = vectors["probe"]
        console.print(f"  probe of kept vectors: {p['sample']} texts, {p['agree']:.0%} agree, "
                      f"median similarity {p['median_similarity']}", highlight=False)
    print_table(None, ["namespace", "in source", "would import" if dry else "imported",
                       "skipped", "rejected"],
                [[ns, c["source"], c["imported"], c["skipped"], c["rejected"]]
                 for ns, c in result["namespaces"].items()])
    done = result["would_import"] if dry else result["imported"]
    console.print(f"  rows read {result['read']} = {done} {'to import' if dry else 'imported'} + "
                  f"{result['skipped']} skipped + {result['rejected']} rejected", highlight=False)
    for label, key in (("rejected", "rejected_examples"), ("skipped", "skipped_examples")):
        for item in result[key][:show]:
            err_console.print(f"  {label} row {item['row']} ({item['id']}): {item['reason']}",
                              highlight=False, soft_wrap=True)
        total = result[label]
        if total > show:
            err_console.print(f"  ... and {total - show} more {label} rows (--show N, or --json)",
                              highlight=False)
    for note, count in result["notes"].items():
        console.print(f"  note: {note} ({count} rows)", highlight=False)
    if not dry and result["verified"]:
        console.print(f"verified: every imported memory is in the store ({done} in "
                      f"{len(result['namespaces'])} namespaces); {result['seconds']}s",
                      highlight=False)


def export(
    ctx: typer.Context,
    out: Path | None = typer.Option(None, "--out", "-o", help="File to write (.zst: "
                                    "compressed); default stdout."),
    user_id: list[str] = typer.Option([], "--user-id", help="Only these users (repeatable)."),
    agent_id: list[str] = typer.Option([], "--agent-id", help="Only these agents."),
    run_id: list[str] = typer.Option([], "--run-id", help="Only these runs."),
    with_vectors: bool = typer.Option(False, "--with-vectors",
                                      help="Include the active embedder's vector and key."),
    fmt: str = typer.Option("jsonl", "--format", help="Output format: jsonl."),
    as_json: bool = JsonOption,
) -> None:
    """Write every memory as JSON lines (one consistent snapshot).

    `memvault import jsonl FILE` reads it back."""
    from memvault.cli.backup import progress_bars
    from memvault.config import load_settings
    from memvault.migrate import ExportFilter, export_jsonl
    from memvault.store import open_store

    if fmt != "jsonl":
        raise typer.BadParameter(f"--format {fmt!r}: only jsonl is supported")
    if as_json and out is None:
        raise typer.BadParameter("--json prints a summary on stdout, which holds the export "
                                 "without --out: give --out FILE")
    settings = load_settings(overrides(ctx))
    store = open_store(settings)
    try:
        with progress_bars(out is not None and not as_json) as progress:
            report = export_jsonl(store, out, filters=ExportFilter(user_id, agent_id, run_id),
                                  with_vectors=with_vectors, progress=progress)
    finally:
        store.close()
    if as_json:
        print_json(report.to_json())
        return
    target = err_console if out is None else console
    target.print(f"exported {report.count} memories in {len(report.counts)} namespaces "
                 f"(seq {report.seq}) to {report.out}"
                 + (f" with vectors of {report.embedder}" if report.embedder else ""),
                 highlight=False)


__all__ = ["export", "import_app"]
