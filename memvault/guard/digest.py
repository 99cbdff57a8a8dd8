"""The daily digest: once a day a short account goes to the alert URLs even when all is well.
Its absence, or a count that looks wrong to the person who knows the data, tells what no
automatic check can (the incident ran 17 days in silence). A record per day in the backup
destinations (`lineages/<lineage>/digest/<seq>-<n><day>.json`; format-1 `digests/<day>.json`
still counts) keeps it to one per day across restarts and replicas."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from memvault.backup.destinations import Destination
from memvault.backup.layout import RecordKind, records_prefix
from memvault.backup.records import next_record_key, put_records
from memvault.errors import MemvaultError
from memvault.guard.alerts import AlertManager
from memvault.guard.checks import Observation, Verdict
from memvault.guard.ledger import LedgerRecord

log = logging.getLogger("memvault.guard")

DIGEST_HOUR_UTC = 8  # the digest goes out at the first check after 08:00 UTC
LEGACY_PREFIX = "digests/"
DIGEST_MIN_UPTIME_SECONDS = 600.0  # not from a server that just started (or a test)


def send_digest(destinations: list[Destination], alerts: AlertManager,
                compose: Callable[[], tuple[str, str]], configured: bool,
                now: datetime | None = None, *, lineage_id: str = "", seq: int = 0
                ) -> tuple[bool, str | None]:
    """Send today's digest unless it is too early, nobody is configured, or it went out
    already (a record for the day). Returns (sent now, the day known to be done or None)."""
    now = now or datetime.now(UTC)
    if not configured or now.hour < DIGEST_HOUR_UTC:
        return False, None
    day = now.strftime("%Y-%m-%d")
    try:
        if any(_sent(dest, lineage_id, day) for dest in destinations):
            return False, day
    except MemvaultError as exc:
        log.error("cannot check for today's digest: %s", exc)
        return False, None
    title, body = compose()
    deliveries = alerts.notify(title, body)
    marker = json.dumps({"sent_at": now.isoformat(), "title": title, "day": day,
                         "delivered": sum(d.ok for d in deliveries)}).encode()
    if lineage_id:
        key = next_record_key(destinations, lineage_id, RecordKind.DIGEST, seq,
                              now.strftime("%Y%m%d"))
        put_records(destinations, key, marker, prefix=records_prefix(lineage_id,
                                                                     RecordKind.DIGEST),
                    keep=20, what="digest record")
    return True, day


def _sent(dest: Destination, lineage_id: str, day: str) -> bool:
    if dest.size(f"{LEGACY_PREFIX}{day}.json") is not None:
        return True
    if not lineage_id:
        return False
    compact = day.replace("-", "")
    return any(k.endswith(f"{compact}.json")
               for k in dest.list(records_prefix(lineage_id, RecordKind.DIGEST)))


def digest_text(obs: Observation, verdict: Verdict, ledger: LedgerRecord | None,
                alerts: dict[str, Any], drill: dict[str, Any] | None,
                newest_valid_at: float | None) -> tuple[str, str]:
    firing = [f.alert for f in verdict.firing()]
    peak = ledger.peak_since(datetime.now(UTC) - timedelta(hours=24)) if ledger else 0
    state = "ATTENTION" if firing else "OK"
    title = f"[DIGEST] memvault {state}: {obs.total} memories in {len(obs.namespaces)} namespaces"
    lines = [f"store {obs.store_id} ({obs.backend}, {obs.location}), journal seq {obs.seq}",
             f"memories: {obs.total} now, {peak} at most in the last 24 h"]
    lines += [f"  {ns}: {n}" for ns, n in sorted(obs.namespaces.items())[:20]]
    if newest_valid_at:
        age_h = (time.time() - newest_valid_at) / 3600
        lines.append(f"newest valid backup: {age_h:.1f} h old")
    else:
        lines.append("newest valid backup: none known to this server")
    if drill:
        lines.append(f"last successful restore drill: {drill.get('last_success_at') or 'never'}")
    lines.append("alerts firing: " + (", ".join(firing) if firing else "none"))
    sent = alerts.get("notifications", {})
    lines.append(f"notifications so far: {sent.get('sent', 0)} sent, {sent.get('failed', 0)} "
                 "failed")
    return title, "\n".join(lines)
