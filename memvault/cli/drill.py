"""`memvault drill`: restore the newest backup into a scratch store, verify it, record it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from memvault.cli.output import JsonOption, console, print_error, print_json, print_table


def drill(
    ctx: typer.Context,
    lineage: str | None = typer.Option(
        None, "--lineage", help="Which lineage to drill when the destinations hold several "
        "(default: the only one; `memvault backup list` shows them)."),
    config_file: Path | None = typer.Option(
        None, "--config", help="Drill a candidate configuration (memvault.toml): restore with "
        "its embedder (re-embedding if the model differs) and check its database is reachable. "
        "Not recorded."),
    env_file: Path | None = typer.Option(None, "--env", help="The candidate as a dotenv file."),
    as_json: bool = JsonOption,
) -> None:
    """Restore the newest backup into a scratch store, verify it, record the result.

    Exit 0 if the drill passed, 1 if not. The live store is never touched."""
    from memvault.cli.backup import progress_bars
    from memvault.cli.context import overrides
    from memvault.config import load_settings
    from memvault.guard.drill import run_drill

    settings = load_settings(overrides(ctx))
    candidate = None
    database: dict[str, Any] | None = None
    if config_file is not None or env_file is not None:
        settings, candidate, database = _candidate(ctx, config_file, env_file)
    with progress_bars(not as_json) as progress:
        report = run_drill(settings, progress=progress, lineage_id=lineage, candidate=candidate)
    result = report.to_json() | ({"database": database} if database else {})
    if as_json:
        print_json(result)
    else:
        _print(result)
    if database is not None and not database["reachable"]:
        print_error(f"the candidate's database {database['url']} ({database['target']}) is not "
                    f"reachable: {database['error']}", "fix the candidate's "
                    "MEMVAULT_DATABASE_URL (host, port, user, password), then drill again")
        raise typer.Exit(1)
    if not report.ok:
        print_error(f"restore drill failed: {report.error}", report.hint)
        raise typer.Exit(1)


def _candidate(ctx: typer.Context, config_file: Path | None, env_file: Path | None
               ) -> tuple[Any, Any, dict[str, Any]]:
    """The candidate's settings, its embedder and its database looked at read-only."""
    from memvault.cli.context import overrides
    from memvault.embed import make_embedder
    from memvault.preflight import load_candidate, probe_database

    candidate = load_candidate(overrides(ctx), env_file=env_file, config_file=config_file)
    settings = candidate.settings
    database = probe_database(settings.database_url or "", settings.db_timeout).to_json()
    return settings, make_embedder(settings.embedder, settings), database


def _print(report: dict[str, Any]) -> None:
    newest, restored = report["newest"] or {}, report["restored"] or {}
    durations, sample = report["durations"], report["sample"]
    journal = report["journal"]
    rows = [
        ["result", "PASSED" if report["ok"] else f"FAILED ({report['reason']})"],
        ["newest backup", f"{newest.get('id')} in {newest.get('destination')}"
         if newest else "none"],
        ["restored backup", f"{restored.get('id')} (seq {restored.get('seq')}, taken "
         f"{restored.get('created_at')})" if restored else "-"],
        ["journal replayed", f"{journal.get('replayed', 0)} entries up to seq "
         f"{journal.get('upto_seq')}" if journal else "-"],
        ["memories", f"{report['total']} restored, {sum(report['expected_counts'].values())} "
         "expected" if restored else "-"],
        ["vectors", f"{report['vectors'].get('count')} of {report['vectors'].get('embedder')}"
         if report["vectors"] else "-"],
        ["search sample", f"{sample.get('found_first')} of {sample.get('checked')} found first "
         "with their own vectors" if sample else "-"],
        ["time", ", ".join(f"{k.removesuffix('_s')} {v:.2f}s" for k, v in durations.items())],
        ["record", report["record"] or "not written"],
    ]
    if report.get("candidate"):
        cand, db = report["candidate"], report.get("database") or {}
        rows[1:1] = [
            ["candidate embedder", f"{cand['embedder']} (backup: {cand['backup_embedder']}; "
             + ("every memory re-embedded)" if cand["reembedded"] else "same model)")],
            ["candidate database", f"{db.get('url')}: " + (
                "reachable" if db.get("reachable") else f"NOT reachable: {db.get('error')}")]]
    print_table("restore drill", ["check", "result"], rows)
    for note in report["fallbacks"]:
        console.print(f"[yellow]skipped:[/] {note}", highlight=False)
    for problem in report["record_problems"]:
        print_error(problem)
    namespaces: list[str] = []
    if report["expected_counts"] or report["counts"]:
        namespaces = sorted(set(report["expected_counts"]) | set(report["counts"]))
        if len(namespaces) > 20:  # all of them in --json; here the ones that differ
            namespaces = [ns for ns in namespaces if report["expected_counts"].get(ns, 0)
                          != report["counts"].get(ns, 0)]
    if namespaces:
        print_table(None, ["namespace", "expected", "restored"],
                    [[ns, report["expected_counts"].get(ns, 0), report["counts"].get(ns, 0)]
                     for ns in namespaces])

