"""Alert delivery through apprise to real webhook receivers on 127.0.0.1, and `alerts test`."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from memvault.cli import app
from memvault.errors import ConfigError
from memvault.guard.alerts import ALERTS, AlertManager, redact_apprise_url
from tests.peers.http_peer import HTTPPeer

SECRET = "s3cr3t-Pa55word"
TOKEN = "tok3n-9f8e7d6c5b4a"


class Receiver:
    """A webhook receiver whose answer can be switched between healthy and failing."""

    def __init__(self) -> None:
        self.status = 200
        self.peer = HTTPPeer({("POST", "/hook"): lambda body, headers: (self.status, {})})

    def url(self, auth: str = "") -> str:
        return f"json://{auth}127.0.0.1:{self.peer.port}/hook"

    @property
    def titles(self) -> list[str]:
        return [r["body"]["title"] for r in self.peer.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    with rec.peer:
        yield rec


@pytest.fixture
def second() -> Iterator[Receiver]:
    rec = Receiver()
    with rec.peer:
        yield rec


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manager(urls: list[str], registry: CollectorRegistry | None = None,
            **kwargs: Any) -> AlertManager:
    kwargs.setdefault("retries", 1)
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 3.0)
    return AlertManager(urls, registry=registry or CollectorRegistry(), instance="test store",
                        **kwargs)


def firing(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("memvault_alerts_firing", {"alert": name})


def notifications(registry: CollectorRegistry, result: str) -> float | None:
    return registry.get_sample_value("memvault_notifications_total", {"result": result})


def test_fire_notifies_once_and_resolve_notifies_once(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    alerts = manager([receiver.url()], registry)
    assert {name: firing(registry, name) for name in ALERTS} == dict.fromkeys(ALERTS, 0.0)

    assert alerts.fire("StoreEmpty", "the store holds 0 memories, the ledger expects 2000",
                       {"expected": 2000, "found": 0, "hint": "run `memvault restore latest`"})
    assert len(receiver.peer.requests) == 1
    body = receiver.peer.requests[0]["body"]
    assert body["title"].startswith("[FIRING] StoreEmpty: the store holds 0 memories")
    assert body["type"] == "failure"
    assert "expected: 2000" in body["message"] and "test store" in body["message"]
    assert "What to do: run `memvault restore latest`" in body["message"]
    assert firing(registry, "StoreEmpty") == 1.0

    assert not alerts.fire("StoreEmpty", "the store holds 0 memories, still")  # no spam
    assert len(receiver.peer.requests) == 1
    state = alerts.firing()["StoreEmpty"]
    assert state["severity"] == "critical" and state["since"]

    assert alerts.resolve("StoreEmpty", "restored 2000 memories")
    assert receiver.titles[1] == "[RESOLVED] StoreEmpty: restored 2000 memories"
    assert receiver.peer.requests[1]["body"]["type"] == "success"
    assert firing(registry, "StoreEmpty") == 0.0 and alerts.firing() == {}
    assert not alerts.resolve("StoreEmpty")  # not firing: nothing sent
    assert len(receiver.peer.requests) == 2
    assert notifications(registry, "sent") == 2.0 and notifications(registry, "failed") == 0.0


def test_severities_and_unknown_names() -> None:
    assert set(ALERTS) == {"StoreEmpty", "StoreReplaced", "MemoryCountDrop", "EmbedderMismatch",
                           "BackupStale", "BackupInvalid", "JournalLag", "DrillFailed",
                           "NotifierFailing", "StoreUnreachable", "BackupFailing",
                           "DestinationShared", "WriterConflict", "ClockSkew"}
    assert {n for n, s in ALERTS.items() if s == "critical"} == {
        "StoreEmpty", "StoreReplaced", "EmbedderMismatch", "BackupInvalid", "StoreUnreachable",
        "BackupFailing", "WriterConflict"}
    with pytest.raises(ValueError, match="unknown alert 'StoreGone'"):
        manager([]).fire("StoreGone", "x")


def test_failing_receiver_raises_notifier_failing_elsewhere_then_resolves(
        receiver: Receiver, second: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    receiver.status = 500
    failing_url = receiver.url(f"ops:{SECRET}@")
    alerts = manager([failing_url, second.url()], registry, retries=2)
    redacted = redact_apprise_url(failing_url)
    with caplog.at_level(logging.INFO):
        alerts.fire("BackupStale", "no valid backup for 30h")

    assert len(receiver.peer.requests) == 3  # one try and two retries, all answered 500
    assert notifications(registry, "failed") == 1.0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(redacted in m and "500" in m for m in errors), errors
    assert firing(registry, "NotifierFailing") == 1.0
    assert second.titles == ["[FIRING] BackupStale: no valid backup for 30h",
                             f"[FIRING] NotifierFailing: 1 of 2 alert URLs cannot be reached: "
                             f"{redacted}"]
    # NotifierFailing was never sent to the URL that failed
    assert all("NotifierFailing" not in t for t in receiver.titles)
    last_error = alerts.status()["last_error"]
    assert f"{redacted}: " in last_error and "500" in last_error

    receiver.status = 200
    alerts.fire("JournalLag", "journal 5 min behind")
    assert firing(registry, "NotifierFailing") == 0.0
    resolved = "[RESOLVED] NotifierFailing: notifications reach every configured URL again"
    assert receiver.titles[-2:] == ["[FIRING] JournalLag: journal 5 min behind", resolved]
    assert second.titles[-1] == resolved
    assert SECRET not in caplog.text


def test_closed_port_fails_fast_and_the_only_url_is_not_recursed_on(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    url = f"json://127.0.0.1:{closed_port()}/hook"
    alerts = manager([url], registry)
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        assert alerts.fire("StoreUnreachable", "database refuses connections")
        assert time.monotonic() - started < 2.0
    assert firing(registry, "StoreUnreachable") == 1.0
    assert firing(registry, "NotifierFailing") == 1.0
    assert notifications(registry, "failed") == 1.0  # NotifierFailing had nowhere else to go
    assert notifications(registry, "sent") == 0.0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(url in m and "onnection" in m for m in errors), errors
    [delivery] = alerts.test()
    assert not delivery.ok and delivery.url == url and "onnection" in (delivery.error or "")


def test_slow_receiver_is_bounded_by_timeout() -> None:
    def slow(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        time.sleep(1.0)
        return 200, {}

    with HTTPPeer({("POST", "/hook"): slow}) as peer:
        alerts = manager([f"json://127.0.0.1:{peer.port}/hook"], retries=0, timeout=0.3)
        started = time.monotonic()
        [delivery] = alerts.test()
        assert time.monotonic() - started < 0.9
    assert not delivery.ok and delivery.error


def test_no_urls_still_sets_gauge_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    alerts = AlertManager([], registry=registry)
    with caplog.at_level(logging.INFO):
        assert alerts.fire("EmbedderMismatch", "store vectors are 1536-dim, embedder is 768")
        assert alerts.fire("DrillFailed", "restore drill found 3 missing memories")
    levels = {r.getMessage().split(" (")[0]: r.levelno for r in caplog.records
              if r.name == "memvault.guard.alerts"}
    assert levels == {"alert FIRING EmbedderMismatch": logging.ERROR,
                      "alert FIRING DrillFailed": logging.WARNING}
    assert firing(registry, "EmbedderMismatch") == 1.0
    status = alerts.status()
    assert status["urls"] == [] and not status["configured"]
    assert "MEMVAULT_ALERT_URLS" in status["message"]
    assert set(status["firing"]) == {"EmbedderMismatch", "DrillFailed"}
    assert alerts.test() == []


@pytest.mark.parametrize(("url", "redacted"), [
    ("json://user:pass@hooks.example.com/path", "json://***@hooks.example.com/path"),
    ("jsons://ops:Secr3t@hooks.example.com:8443/memvault?+X-Token=abc123",
     "jsons://***@hooks.example.com:8443/memvault?+X-Token=***"),
    ("json://127.0.0.1:8080/hooks/9f1c2e7a44b0d6e1", "json://127.0.0.1:8080/hooks/***"),
    ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-1001234567",
     "tgram://***/***"),
    ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general",
     "slack://***/***/***/***"),
    ("mailto://alerts:app-password@gmail.com?to=ops@example.com",
     "mailto://***@gmail.com?to=***"),
    ("discord://1234567890/AbCdEfGhIjKlMnOpQrStUvWxYz", "discord://***/***"),
    ("https://discord.com/api/webhooks/1234567890/AbCdEfGhIjKlMnOp",
     "https://discord.com/api/webhooks/***/***"),
    ("not a url", "***"),
])
def test_redact_apprise_url(url: str, redacted: str) -> None:
    assert redact_apprise_url(url) == redacted


def test_invalid_url_is_a_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        AlertManager([f"nosuchservice://admin:{SECRET}@example.com/x"])
    assert "nosuchservice://***/***" in str(caught.value)  # unknown scheme: all masked
    assert "memvault alerts test" in (caught.value.hint or "")
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError):
        AlertManager(["json://"])  # no host


def test_secrets_never_reach_logs_status_or_payload_metadata(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    receiver.status = 503
    url = receiver.url(f"ops:{SECRET}@") + f"?+X-Api-Key={TOKEN}"
    with caplog.at_level(1):  # below DEBUG: apprise's TRACE messages print parsed URLs
        alerts = manager([url], registry)
        alerts.fire("StoreReplaced", "store id changed from a1 to b2")
        receiver.status = 200
        assert alerts.test()[0].ok
    assert receiver.peer.requests[-1]["headers"]["x-api-key"] == TOKEN  # it was really used
    status = json.dumps(alerts.status())
    metrics = json.dumps([m.samples for m in registry.collect()], default=str)
    for text in (caplog.text, status, metrics):
        assert SECRET not in text and TOKEN not in text
    assert redact_apprise_url(url) in status


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def test_cli_alerts_test_delivers(cli: CliRunner, receiver: Receiver,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url = receiver.url(f"ops:{SECRET}@")
    monkeypatch.setenv("MEMVAULT_ALERT_URLS", url)
    out = cli.invoke(app, ["alerts", "test"])
    assert out.exit_code == 0, out.output
    assert receiver.titles == ["[TEST] memvault alert test"]
    assert "delivered" in out.output and SECRET not in out.output
    as_json = cli.invoke(app, ["alerts", "test", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {
        "ok": True, "results": [{"url": redact_apprise_url(url), "ok": True, "error": None}]}
    assert len(receiver.peer.requests) == 2


def test_cli_alerts_test_fails_naming_the_url(cli: CliRunner, receiver: Receiver,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.status = 500
    bad = f"json://ops:{SECRET}@127.0.0.1:{closed_port()}/hook"
    monkeypatch.setenv("MEMVAULT_ALERT_URLS", f"{receiver.url()},{bad}")
    out = cli.invoke(app, ["alerts", "test", "--json"])
    assert out.exit_code == 1
    report = json.loads(out.stdout)
    assert not report["ok"] and [r["ok"] for r in report["results"]] == [False, False]
    assert "2 of 2 alert URLs" in out.output and redact_apprise_url(bad) in out.output
    assert "what to do" in out.output and SECRET not in out.output


def test_cli_alerts_test_without_urls(cli: CliRunner) -> None:
    out = cli.invoke(app, ["alerts", "test"])
    assert out.exit_code == 1
    assert "no alert URL is configured" in out.output
    assert "MEMVAULT_ALERT_URLS=" in out.output and "tgram://" in out.output


def test_cli_alerts_test_rejects_a_bad_url(cli: CliRunner,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMVAULT_ALERT_URLS", f"nosuchservice://{SECRET}")
    out = cli.invoke(app, ["alerts", "test"])
    assert out.exit_code == 1 and "apprise cannot use" in out.output
    assert SECRET not in out.output
