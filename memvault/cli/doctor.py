"""`memvault doctor`: everything `status` checks, plus whether the safety net would hold today:
backups reachable, recent and valid; the guard's ledger; someone to alert; disk space.
Nagios exit codes like `status`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import typer

from memvault.cli.output import JsonOption, console, print_error, print_json, print_table
from memvault.guard.status import CRITICAL, OK, WARNING, State, collect_status

LOW_DISK_BYTES = 1 << 30  # 1 GiB
LOW_DISK_SHARE = 0.05


def doctor(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Check the store, backups, ledger, alerting and disk. Exit 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN."""
    from memvault.cli.context import overrides

    try:
        report = diagnose(overrides(ctx))
    except Exception as exc:  # the doctor itself broke: Nagios UNKNOWN
        print_error(f"doctor could not finish: {type(exc).__name__}: {exc}")
        raise typer.Exit(3) from None
    if as_json:
        print_json(report)
    else:
        colour = {"OK": "green", "WARNING": "yellow"}.get(report["status"], "red")
        console.print(f"[bold {colour}]{report['status']}[/]  {report['database_url']}")
        print_table("checks", ["check", "status", "message", "what to do"],
                    [[c["name"], c["status"], c["message"], c.get("hint", "")]
                     for c in report["checks"]])
    raise typer.Exit(report["exit_code"])


def diagnose(flags: dict[str, Any]) -> dict[str, Any]:
    from memvault.config import load_settings, redact_url

    settings = load_settings(flags)
    report = collect_status(flags)  # store, embedder, vectors, contents, guard
    checks: list[dict[str, Any]] = []
    total = (report.get("memories") or {}).get("total", 0)
    checks += backup_checks(settings, total)
    checks += drill_checks(settings)
    checks += clock_checks(settings)
    checks += alerting_checks(settings)
    checks += disk_checks(settings)
    checks += scope_checks(settings)
    worst = max([report["exit_code"], *(c["state"] for c in checks)])
    for check in checks:
        check["status"] = State(check.pop("state")).name
        for field in ("name", "message", "hint"):  # destinations may be URLs with keys
            if isinstance(check.get(field), str):
                check[field] = redact_url(check[field])
    report["checks"] = report["checks"] + checks
    report["status"] = State(worst).name
    report["exit_code"] = int(worst)
    return report


def scope_checks(settings: Any) -> list[dict[str, Any]]:
    """PostgreSQL: each vector's copy of its memory's user/agent/run agrees with the memory."""
    from memvault.errors import MemvaultError
    from memvault.store import open_store

    try:
        store = open_store(settings)
        try:
            if store.backend != "postgres":
                return []  # SQLite keeps no copy
            stale = store.stale_scope_copies()
        finally:
            store.close()
    except MemvaultError as exc:  # the store check above says why it cannot be reached
        return [{"name": "scope_copies", "state": WARNING,
                 "message": f"the vectors' scope copies could not be counted: {exc}"}]
    if not stale:
        return [{"name": "scope_copies", "state": OK,
                 "message": "every vector carries its memory's user/agent/run"}]
    return [{"name": "scope_copies", "state": CRITICAL,
             "message": f"{stale} vectors carry another user/agent/run than their memory: "
                        "searches in a small scope miss those memories",
             "hint": "enable the table's triggers if they were disabled (ALTER TABLE "
                     "memvault.vectors ENABLE TRIGGER USER), then copy each memory's own "
                     "back: UPDATE memvault.vectors SET memory_id = memory_id"}]


def backup_checks(settings: Any, memories: int) -> list[dict[str, Any]]:
    from memvault.backup.catalog import list_backups
    from memvault.backup.destinations import open_destinations
    from memvault.errors import MemvaultError
    from memvault.guard.checks import backup_stale_after

    checks = []
    stale_after = backup_stale_after(settings.backup_interval)
    try:
        destinations = open_destinations(settings)
    except MemvaultError as exc:
        return [{"name": "backups", "state": CRITICAL, "message": str(exc),
                 "hint": "fix MEMVAULT_BACKUP_URLS"}]
    for dest in destinations:
        name = f"backups {dest.url}"
        try:
            entries = list_backups(dest)
        except MemvaultError as exc:
            checks.append({"name": name, "state": CRITICAL, "message": f"unreachable: {exc}",
                           "hint": "check the path, mount or credentials of this destination"})
            continue
        problem = _write_probe(dest)
        if problem:
            checks.append({"name": name, "state": CRITICAL, "message": f"not writable: "
                           f"{problem}", "hint": "check that the path exists and is mounted "
                           "(NAS), the permissions, or the bucket credentials"})
            continue
        valid = [e for e in entries if e.valid and e.created]
        if not valid:
            state = CRITICAL if memories else WARNING
            checks.append({"name": name, "state": state,
                           "message": f"no valid backup ({len(entries)} in all)",
                           "hint": "run `memvault backup create`; `memvault backup list` "
                           "shows why earlier ones are not valid"})
            continue
        # Newest = highest seq; a stamp from a clock that ran ahead gives age 0, not < 0.
        newest = max(valid, key=lambda e: e.order())
        age = max(0.0, time.time() - newest.created.timestamp())  # type: ignore[union-attr]
        last = max(entries, key=lambda e: e.order())
        message = (f"newest valid {newest.id}, {age / 3600:.1f} h old, "
                   f"{newest.manifest.total if newest.manifest else '?'} memories")
        if age > stale_after:
            checks.append({"name": name, "state": WARNING, "message": message + " (stale)",
                           "hint": "is `memvault serve` running? `memvault backup create` "
                           "takes one now"})
        elif last is not newest:
            checks.append({"name": name, "state": WARNING,
                           "message": f"the newest backup {last.id} is {last.status}; "
                           + message, "hint": "`memvault backup list` shows the reasons"})
        else:
            checks.append({"name": name, "state": OK, "message": message})
    return checks


def _write_probe(dest: Any) -> str | None:
    """Write and delete a small file: a destination that lists fine (an unmounted NAS folder
    is just empty) may still refuse the next backup."""
    import uuid

    from memvault.errors import MemvaultError

    key = f"doctor-probe-{uuid.uuid4().hex}"
    try:
        dest.put_bytes(key, b"memvault doctor write probe\n")
        dest.delete([key])
    except (MemvaultError, OSError) as exc:
        return str(exc)
    return None


def drill_checks(settings: Any) -> list[dict[str, Any]]:
    """The newest restore drill (records kept in the backup destinations by guard/drill.py)."""
    from datetime import datetime

    from memvault.backup.destinations import open_destinations
    from memvault.errors import MemvaultError
    from memvault.guard.drill import read_drills

    try:
        records, problems = read_drills(open_destinations(settings), limit=1)
    except MemvaultError as exc:
        return [{"name": "drill", "state": WARNING, "message": f"cannot read drills: {exc}"}]
    hint = "`memvault drill` restores the newest backup into a scratch store and checks it"
    if not records:
        return [{"name": "drill", "state": WARNING, "hint": hint,
                 "message": "no restore drill on record: the backups were never restored"
                 + (f" ({'; '.join(problems)})" if problems else "")}]
    newest = records[0]
    finished = datetime.fromisoformat(str(newest["finished_at"])).timestamp()
    age_days = (time.time() - finished) / 86400
    message = f"newest drill {'passed' if newest.get('ok') else 'FAILED'}, {age_days:.1f} d ago"
    if age_days < -300 / 86400:  # newest by seq, stamped by a clock that ran ahead
        return [{"name": "drill", "state": WARNING, "hint": "check NTP; run `memvault drill`",
                 "message": f"ClockSkew: the newest drill record is stamped "
                 f"{newest['finished_at']}, ahead of this clock: its age is unknown"}]
    if not newest.get("ok"):
        return [{"name": "drill", "state": WARNING, "hint": newest.get("hint") or hint,
                 "message": f"{message}: {newest.get('error')}"}]
    if time.time() - finished > 1.5 * settings.drill_interval:
        return [{"name": "drill", "state": WARNING, "hint": hint, "message": message +
                 " (older than the drill interval)"}]
    return [{"name": "drill", "state": OK, "message": message}]


def clock_checks(settings: Any) -> list[dict[str, Any]]:
    """Stamps in the backup destinations ahead of this clock (manifests, heads, segments)."""
    from memvault.backup import open_destinations
    from memvault.backup.clock import clock_skew_findings
    from memvault.backup.crypto import cipher_for

    secret = settings.backup_encryption_key
    found = clock_skew_findings(open_destinations(settings),
                                cipher_for(secret.get_secret_value() if secret else None))
    if not found:
        return [{"name": "clock", "state": OK,
                 "message": "no stamp in the backups is ahead of this clock"}]
    return [{"name": "clock", "state": WARNING,
             "message": "; ".join(f.message() for f in found[:3])
             + (f" (+{len(found) - 3} more)" if len(found) > 3 else ""),
             "hint": "check NTP on this host and on every host writing to the destinations; "
             "order follows seq, so nothing is hidden"}]


def alerting_checks(settings: Any) -> list[dict[str, Any]]:
    from memvault.guard.alerts import redact_apprise_url

    urls = [u.get_secret_value() for u in settings.alert_urls]
    if not urls:
        return [{"name": "alerts", "state": WARNING,
                 "message": "no MEMVAULT_ALERT_URLS: alerts reach only the log and /metrics",
                 "hint": "set MEMVAULT_ALERT_URLS (see docs/alerts.md), then `memvault "
                 "alerts test`"}]
    shown = ", ".join(redact_apprise_url(u) for u in urls)
    return [{"name": "alerts", "state": OK,
             "message": f"{len(urls)} notification URL(s): {shown} (`memvault alerts test` "
             "sends a test)"}]


def disk_checks(settings: Any) -> list[dict[str, Any]]:
    """One row per filesystem holding the data dir or a local backup folder (a backup folder
    inside the data dir shares its disk: one row, naming both)."""
    paths = {Path(settings.data_dir)}
    paths |= {Path(url) for url in settings.backup_urls if "://" not in url}
    by_disk: dict[int, list[Path]] = {}
    probes: dict[int, Path] = {}
    for path in sorted(paths):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        device = probe.stat().st_dev
        by_disk.setdefault(device, []).append(path)
        probes.setdefault(device, probe)
    checks = []
    for device, held in by_disk.items():
        usage = shutil.disk_usage(probes[device])
        free = usage.free
        message = (f"{free / (1 << 30):.1f} GiB free of {usage.total / (1 << 30):.1f} GiB for "
                   + ", ".join(str(p) for p in held))
        low = free < LOW_DISK_BYTES or free < LOW_DISK_SHARE * usage.total
        checks.append({"name": "disk", "state": WARNING if low else OK, "message": message,
                       **({"hint": "free space: a full disk fails writes and backups"}
                          if low else {})})
    return checks
