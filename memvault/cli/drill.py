"""`memvault drill`: restore the newest backup into a scratch store, verify it, record it."""

from __future__ import annotations

from typing import Any

import typer

from memvault.cli.output import JsonOption, console, print_error, print_json, print_table


def drill(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Restore the newest backup into a scratch store, verify it, record the result.

    Exit 0 if the drill passed, 1 if not. The live store is never touched."""
    from memvault.cli.backup import progress_bars
    from memvault.cli.context import overrides
    from memvault.config import load_settings
    from memvault.guard.drill import run_drill

    settings = load_settings(overrides(ctx))
    with progress_bars(not as_json) as progress:
        report = run_drill(settings, progress=progress)
    if as_json:
        print_json(report.to_json())
    else:
        _print(report.to_json())
    if not report.ok:
        print_error(f"restore drill failed: {report.error}", report.hint)
        raise typer.Exit(1)


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
