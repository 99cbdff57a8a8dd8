"""The safety snapshot as the destructive commands share it: the `--no-safety-snapshot` flag
and the one way a command takes the snapshot and names it (backup/safety.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from memvault.cli.output import console

if TYPE_CHECKING:
    from memvault.backup.safety import Operation

NoSafetySnapshotOption = typer.Option(
    False, "--no-safety-snapshot",
    help="Go ahead without first taking a validated snapshot of the store (there is then no "
    "one-command way back). By default a failed snapshot refuses the operation.")


def safety_snapshot(store: Any, settings: Any, operation: Operation, *, skip: bool, as_json: bool
                    ) -> dict[str, Any] | None:
    """Snapshot `store` before `operation` (raises SafetySnapshotFailed, nothing changed) and
    say so; the snapshot's JSON for the command's --json output, or None."""
    from memvault.backup.safety import SafetySnapshots

    taken = SafetySnapshots(store, settings).before(operation, enabled=not skip)
    if taken is not None and not as_json:
        console.print(taken.describe(), highlight=False, soft_wrap=True)
    return taken.to_json() if taken is not None else None
