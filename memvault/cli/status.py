"""`memvault status`: the status report (memvault/guard/status.py) as a table."""

from __future__ import annotations

from typing import Any

from memvault.cli.output import console, print_table
from memvault.guard.status import collect_status

__all__ = ["collect_status", "render_status"]


def render_status(report: dict[str, Any]) -> None:
    colour = {"OK": "green", "WARNING": "yellow", "CRITICAL": "red"}.get(report["status"], "red")
    console.print(f"[bold {colour}]{report['status']}[/]  {report.get('database_url', '')}")
    store = report.get("store")
    if store:
        console.print(f"store {store['store_id']} ({store['backend']}, schema "
                      f"{store['schema_version']}, journal seq {store['last_seq']})")
        if store.get("system_identifier"):
            console.print(f"PostgreSQL cluster system_identifier {store['system_identifier']}")
        embedders = report["embedders"]
        configured = (embedders["configured"] or {}).get("key", "unavailable")
        console.print(f"embedder: active {embedders['active']}, configured {configured}")
        namespaces = report["memories"]["namespaces"]
        print_table(f"{report['memories']['total']} memories", ["namespace", "memories"],
                    [[ns, n] for ns, n in namespaces.items()])
    print_table("checks", ["check", "status", "message"],
                [[c["name"], c["status"], c["message"]] for c in report["checks"]])
