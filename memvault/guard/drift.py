"""Configuration drift: this start's configuration fingerprint (config/fingerprint.py) against
the one the ledger last recorded for the store it is compared with.

A start with a different database identity, embedder or listen address is logged (old and new,
never a password), counted in `memvault_config_drift_total{what}`, shown in /status, and named
in the StoreEmpty / StoreReplaced alerts it usually comes with ("new credentials and a new
database name" is the incident in PRODUCT.md). The comparison is made once, with the first
record read at start: afterwards this process records its own fingerprint.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from memvault.config.fingerprint import ConfigFingerprint, fingerprint
from memvault.guard.alerts import Alert

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.guard.checks import Verdict
    from memvault.guard.ledger import LedgerRecord

log = logging.getLogger("memvault.guard")
# The alerts a changed configuration explains.
EXPLAINED = frozenset({Alert.StoreEmpty, Alert.StoreReplaced})


def drift_report(current: ConfigFingerprint, ledger: LedgerRecord | None) -> dict[str, Any]:
    """What differs between `current` and the fingerprint `ledger` recorded (pure)."""
    if ledger is None or not ledger.config:
        return {"fingerprint": current.to_json(), "recorded": None, "changes": {},
                "changed_secrets": []}
    recorded = ConfigFingerprint.from_json(ledger.config)
    return {"fingerprint": current.to_json(), "recorded": recorded.to_json(),
            "recorded_by": f"lineage {ledger.lineage_id} on {ledger.observed_at} "
                           f"({ledger.host})",
            "changes": {what: {"recorded": old, "now": new}
                        for what, (old, new) in current.changes(recorded).items()},
            "changed_secrets": current.changed_secrets(recorded)}


def describe_changes(report: dict[str, Any]) -> str:
    parts = [f"{what} {change['recorded']} -> {change['now']}"
             for what, change in report["changes"].items()]
    if report["changed_secrets"]:
        parts.append(f"changed secrets: {', '.join(report['changed_secrets'])}")
    return "; ".join(parts)


class ConfigDrift:
    """The guard's drift watch: `compare` once with the first ledger record known, `annotate`
    each verdict, `status` for /status."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.current = fingerprint(settings)
        self.counter = Counter("memvault_config_drift_total", "Starts whose configuration "
                               "differs from the one the ledger last recorded, by what changed "
                               "(database, embedder, listen).", ["what"], registry=registry)
        self.report = drift_report(self.current, None)
        self._compared = False

    def compare(self, ledger: LedgerRecord | None) -> None:
        if self._compared or ledger is None:
            return
        self._compared = True
        self.report = drift_report(self.current, ledger)
        if not self.report["changes"] and not self.report["changed_secrets"]:
            return
        for what in self.report["changes"]:
            self.counter.labels(what).inc()
        log.warning("configuration drift since the ledger's record by %s: %s",
                    self.report["recorded_by"], describe_changes(self.report))

    def annotate(self, verdict: Verdict) -> None:
        """Name the configuration change in the alerts it explains."""
        if not self.report["changes"]:
            return
        text = describe_changes(self.report)
        for finding in verdict.firing():
            if finding.alert in EXPLAINED:
                finding.summary += f". The configuration changed since the last record: {text}"
                finding.details["config_changes"] = self.report["changes"]
