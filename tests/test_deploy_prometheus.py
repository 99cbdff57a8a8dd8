"""The shipped Prometheus rules and Alertmanager config, checked by Prometheus's own tools:
`promtool check rules`, the unit tests in deploy/prometheus/tests/ (each alert fires on fed
series and resolves), generated tests that every guard verdict is routed, and amtool."""

from __future__ import annotations

from pathlib import Path

import yaml

from memvault.guard.alerts import ALERTS
from tests.deploy_tools import DEPLOY, clean_env, render, run

RULES = DEPLOY / "prometheus" / "memvault-alerts.yml"
UNIT_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.test.yml"))
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
# Guard verdicts named by the contract (PRODUCT.md) beyond those memvault exports today.
CONTRACT_ALERTS = {"BackupFailing", "DestinationShared", "WriterConflict", "ClockSkew"}


def alert_rules() -> dict[str, dict]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_check_rules() -> None:
    result = run(["promtool", "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no promtool unit tests under deploy/prometheus/tests/"
    text = "".join(p.read_text() for p in UNIT_TESTS)
    for scenario in ("StoreEmpty", "MemoryCountDrop", "StoreReplaced", "BackupStale",
                     "BackupFailing", "JournalLag", "DrillFailed", "MemvaultMetricsAbsent",
                     "MemvaultTargetDown"):
        assert f"alertname: {scenario}" in text, f"no promtool scenario for {scenario}"
    result = run(["promtool", "test", "rules", *map(str, UNIT_TESTS)],
                 cwd=UNIT_TESTS[0].parent)
    assert result.returncode == 0, result.stdout + result.stderr


def routed_verdicts() -> list[str]:
    rules = alert_rules()
    return sorted(n for n, r in rules.items() if f'alert="{n}"' in r["expr"])


def test_rules_route_every_contract_alert() -> None:
    assert set(ALERTS) | CONTRACT_ALERTS <= set(routed_verdicts())


def expected_annotations(rule: dict) -> dict[str, str]:
    return {k: v.replace("{{ $labels.job }}", "memvault")
            for k, v in rule.get("annotations", {}).items()}


def test_every_guard_verdict_fires_and_resolves(tmp_path: Path) -> None:
    """One generated promtool test per routed verdict: memvault_alerts_firing{alert=X} goes
    1 for 10 minutes then back to 0; the rule must fire with its severity, then resolve."""
    rules = alert_rules()
    tests = []
    for name in routed_verdicts():
        rule = rules[name]
        series = f'memvault_alerts_firing{{job="memvault",instance="a:8888",alert="{name}"}}'
        firing = {"exp_labels": {"severity": rule["labels"]["severity"], "job": "memvault"},
                  "exp_annotations": expected_annotations(rule)}
        tests.append({
            "name": f"guard verdict {name}",
            "interval": "1m",
            "input_series": [{"series": series, "values": "0x10 1x10 0x10"}],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": name, "exp_alerts": []},
                {"eval_time": "18m", "alertname": name, "exp_alerts": [firing]},
                {"eval_time": "28m", "alertname": name, "exp_alerts": []},
            ],
        })
    test_file = tmp_path / "verdicts.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(RULES)],
                                         "evaluation_interval": "1m", "tests": tests}))
    result = run(["promtool", "test", "rules", str(test_file)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def rendered_alertmanager(tmp_path: Path) -> Path:
    """alertmanager.yml as deploy/compose renders it, with awkward but valid values."""
    out = tmp_path / "alertmanager.yml"
    env = clean_env(ALERTMANAGER_TELEGRAM_BOT_TOKEN="123456:AA-bb_cc&d|e",
                    ALERTMANAGER_TELEGRAM_CHAT_ID="-1001234567890",
                    ALERTMANAGER_SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T/B/x&y",
                    ALERTMANAGER_SLACK_CHANNEL="#memvault")
    result = render(ALERTMANAGER, out, env)
    assert result.returncode == 0, result.stderr
    return out


def test_alertmanager_config_is_valid_and_routes_critical_to_telegram_and_slack(
        tmp_path: Path) -> None:
    config = rendered_alertmanager(tmp_path)
    assert "123456:AA-bb_cc&d|e" in config.read_text()  # substituted literally
    check = run(["amtool", "check-config", str(config)])
    assert check.returncode == 0, check.stdout + check.stderr
    doc = yaml.safe_load(config.read_text())
    receivers = {r["name"]: r for r in doc["receivers"]}
    for alert in ("StoreEmpty", "StoreReplaced", "BackupFailing", "MemvaultMetricsAbsent"):
        route = run(["amtool", "config", "routes", "test", f"--config.file={config}",
                     "--verify.receivers=oncall-critical", "severity=critical",
                     f"alertname={alert}", "job=memvault"])
        assert route.returncode == 0, route.stdout + route.stderr
    assert {"telegram_configs", "slack_configs"} <= set(receivers["oncall-critical"])
    warning = run(["amtool", "config", "routes", "test", f"--config.file={config}",
                   "severity=warning", "alertname=BackupStale"])
    assert warning.stdout.strip() == "slack-warnings", warning.stdout + warning.stderr
