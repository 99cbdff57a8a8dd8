"""The Prometheus rules and the Grafana dashboard shipped in deploy/ speak about metrics the
server really exports (scraped from a running app after a backup) and cover every alert."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from memvault.config import Settings
from memvault.guard.alerts import ALERTS
from memvault.memory import Memory
from memvault.runtime import Runtime
from memvault.server.app import create_app

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
METRIC = re.compile(r"\b(memvault_[a-z_]+)\b")


def exported_metrics(settings: Settings, memory: Memory) -> set[str]:
    app = create_app(Runtime(settings, memory))  # as `serve` runs it: every job
    with TestClient(app) as client:
        client.post("/memories", json={"messages": [{"role": "user", "content": "a fact"}],
                                       "user_id": "alice", "infer": False})
        assert client.post("/backups").status_code == 200  # labelled backup series appear
        text = client.get("/metrics").text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "counter":
                names.add(f"{name}_total")
    return names


def test_rules_cover_every_alert_and_use_exported_metrics(settings: Settings,
                                                          memory: Memory) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "memvault-alerts.yml").read_text())
    defined = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    records = [r for g in rules["groups"] for r in g["rules"] if "record" in r]
    assert set(ALERTS) <= set(defined), set(ALERTS) - set(defined)
    for name in ALERTS:
        assert f'alert="{name}"' in defined[name]["expr"]  # the guard's verdict is routed
        assert defined[name]["labels"]["severity"] == ALERTS[name]
    exported = exported_metrics(settings, memory)
    used = {m for r in [*defined.values(), *records] for m in METRIC.findall(r["expr"])}
    assert used <= exported, used - exported


def test_dashboard_panels_query_exported_metrics(settings: Settings, memory: Memory) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "memvault-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = {m for e in exprs for m in METRIC.findall(e)}
    exported = exported_metrics(settings, memory)
    assert used <= exported, used - exported
    for required in ("memvault_memories", "memvault_store_identity_ok",
                     "memvault_alerts_firing", "memvault_backup_last_success_timestamp_seconds",
                     "memvault_journal_lag_seconds"):
        assert required in used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
