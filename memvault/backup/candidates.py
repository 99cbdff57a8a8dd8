"""Which lineage a restore takes, and which of its backups to try, best first.

A destination may hold several lineages (stores). Restore takes the target store's own lineage
when it has valid backups, else the only lineage that has any; with several and none its own,
it refuses and names them, so one store never silently becomes another. Within a lineage,
"latest" is the highest seq, never the newest clock.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from memvault.backup.catalog import BackupEntry, list_backups
from memvault.backup.destinations import Destination
from memvault.backup.errors import BackupError, RestoreRefused

log = logging.getLogger("memvault.backup.restore")


def list_all(destinations: list[Destination]) -> tuple[list[BackupEntry], list[str]]:
    """Every backup in every destination, and the destinations that could not be listed."""
    entries: list[BackupEntry] = []
    problems = []
    for dest in destinations:
        try:
            entries += list_backups(dest)
        except BackupError as exc:
            problems.append(str(exc))
            log.error("cannot list backups in %s: %s", dest, exc)
    return entries, problems


def lineages(entries: list[BackupEntry]) -> dict[str, dict[str, Any]]:
    """Per lineage holding valid backups: how many, the newest seq, its memories."""
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not (entry.valid and entry.manifest):
            continue
        info = out.setdefault(entry.manifest.lineage_id,
                              {"backups": 0, "newest_seq": -1, "memories": 0})
        info["backups"] += 1
        if entry.manifest.seq > info["newest_seq"]:
            info["newest_seq"] = entry.manifest.seq
            info["memories"] = entry.manifest.total
    return out


def choose_lineage(entries: list[BackupEntry], requested: str | None,
                   target_lineage: str | None) -> str | None:
    """The lineage to restore (None when no lineage has a valid backup)."""
    held = lineages(entries)
    if requested:
        if requested not in held:
            raise RestoreRefused(
                f"lineage {requested} has no valid backup here" + _listing(held),
                hint="pick one of the lineages listed with --lineage")
        return requested
    if target_lineage in held:
        return target_lineage
    if len(held) <= 1:
        return next(iter(held), None)
    raise RestoreRefused(
        "the destinations hold valid backups of several stores (lineages) and none is this "
        "store's own" + _listing(held),
        hint="choose one with `memvault restore --lineage <lineage>` (the one whose memories "
             "this store should hold)")


def _listing(held: dict[str, dict[str, Any]]) -> str:
    if not held:
        return ""
    return ": " + "; ".join(f"{lineage} ({info['backups']} valid backups, newest at seq "
                            f"{info['newest_seq']} with {info['memories']} memories)"
                            for lineage, info in sorted(held.items()))


def candidates(destinations: list[Destination], which: str, at: datetime | None, *,
               lineage: str | None = None, target_lineage: str | None = None,
               entries: list[BackupEntry] | None = None) -> list[BackupEntry]:
    """Backups to try, best first: `latest` = the valid ones of the chosen lineage (taken
    before `at`), highest seq first; else the one id (every copy of it)."""
    problems: list[str] = []
    if entries is None:
        entries, problems = list_all(destinations)
    where = ", ".join(d.url for d in destinations) + (
        f" ({'; '.join(problems)})" if problems else "")
    if which != "latest":
        chosen = [e for e in entries if e.id == which]
        if not chosen:
            raise RestoreRefused(f"no backup {which} in {where}",
                                 hint="`memvault backup list` shows the backups")
        usable = [e for e in chosen if e.valid]
        if not usable:
            entry = chosen[0]
            reasons = "; ".join(entry.summary()["reasons"])
            raise RestoreRefused(f"backup {which} is {entry.status} ({reasons}); only valid "
                                 "backups are restored", hint="pick a valid backup from "
                                 "`memvault backup list`")
        return usable
    chosen_lineage = choose_lineage(entries, lineage, target_lineage)
    valid = [e for e in entries if e.valid and e.manifest
             and e.manifest.lineage_id == chosen_lineage]
    if at is not None:
        valid = [e for e in valid if e.created and e.created <= at]
    valid.sort(key=BackupEntry.order, reverse=True)
    if not valid:
        raise RestoreRefused(f"no valid backup{' before ' + at.isoformat() if at else ''} in "
                             f"{where}", hint="`memvault backup list` shows what is there")
    return valid
