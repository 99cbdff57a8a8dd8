"""Named alerts (PRODUCT.md), delivered through apprise URLs, with resolve messages.

The rule is "no silent failure": every transition changes `memvault_alerts_firing`, is logged,
and is sent to every configured URL. A URL that cannot be reached is retried, logged at ERROR,
counted in `memvault_notifications_total{result="failed"}` and raises `NotifierFailing`, which
goes to the other URLs. Secrets in the URLs never reach logs, metrics, status or the CLI.
"""

from __future__ import annotations

import copy
import logging
import re
import socket
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter, Gauge

from memvault.errors import ConfigError

log = logging.getLogger(__name__)


class Alert(StrEnum):
    """Every alert: its name in notifications, the metrics' `alert` label and the Prometheus
    rules (PRODUCT.md lists them; ClockSkew warns of a clock stamping the future)."""

    StoreEmpty = "StoreEmpty"
    StoreReplaced = "StoreReplaced"
    MemoryCountDrop = "MemoryCountDrop"
    EmbedderMismatch = "EmbedderMismatch"
    BackupStale = "BackupStale"
    BackupInvalid = "BackupInvalid"
    BackupFailing = "BackupFailing"
    JournalLag = "JournalLag"
    DrillFailed = "DrillFailed"
    NotifierFailing = "NotifierFailing"
    StoreUnreachable = "StoreUnreachable"
    DestinationShared = "DestinationShared"
    WriterConflict = "WriterConflict"
    ClockSkew = "ClockSkew"


CRITICAL, WARNING = "critical", "warning"

ALERTS: dict[Alert, str] = {
    Alert.StoreEmpty: CRITICAL,
    Alert.StoreReplaced: CRITICAL,
    Alert.MemoryCountDrop: WARNING,
    Alert.EmbedderMismatch: CRITICAL,
    Alert.BackupStale: WARNING,
    Alert.BackupInvalid: CRITICAL,
    Alert.BackupFailing: CRITICAL,
    Alert.JournalLag: WARNING,
    Alert.DrillFailed: WARNING,
    Alert.NotifierFailing: WARNING,
    Alert.StoreUnreachable: CRITICAL,
    Alert.DestinationShared: WARNING,
    Alert.WriterConflict: CRITICAL,
    Alert.ClockSkew: WARNING,
}

# Apprise schemes whose first URL component is a real host (anything else is a token, masked).
_HOST_SCHEMES = {
    "json", "jsons", "xml", "xmls", "form", "forms", "http", "https", "mailto", "mailtos",
    "ntfy", "ntfys", "gotify", "gotifys", "apprise", "apprises", "mmost", "mmosts", "rocket",
    "rockets", "matrix", "matrixs", "mqtt", "mqtts", "ncloud", "nclouds", "nctalk", "nctalks",
    "rsyslog", "signal", "signals", "synology", "synologys", "kodi", "kodis", "xbmc", "xbmcs",
    "emby", "embys", "jellyfin", "jellyfins", "homeassistant", "hassio", "hassios",
}


@dataclass
class Delivery:
    """The result of sending one notification to one URL (`url` is redacted)."""

    url: str
    ok: bool
    error: str | None


def _looks_secret(segment: str) -> bool:
    """Path segments of host URLs are kept unless they look like a token or an id."""
    return len(segment) >= 16 or (len(segment) >= 6 and any(c.isdigit() for c in segment))


def _split(url: str) -> tuple[str, str, str, str, str]:
    """scheme, userinfo, host, path, query of an apprise URL (no validation)."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    rest = rest.split("#", 1)[0] if scheme.lower() in _HOST_SCHEMES else rest
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    return scheme, userinfo if at else "", host, slash + path, query


def redact_apprise_url(url: str) -> str:
    """An apprise URL without its secrets, keeping the scheme and the host where there is one.

    json://user:pass@host/path -> json://***@host/path; tgram://BOT/CHAT -> tgram://***/***;
    query values are always masked (they carry passwords, tokens and headers).
    """
    if "://" not in url:
        return "***"
    scheme, userinfo, host, path, query = _split(url)
    if scheme.lower() in _HOST_SCHEMES:
        out = f"{scheme}://{'***@' if userinfo else ''}{host}"
        out += "/".join("***" if _looks_secret(s) else s for s in path.split("/"))
    else:
        authority = f"{userinfo}@{host}" if userinfo else host
        parts = (authority + path).split("/")
        out = f"{scheme}://" + "/".join("***" if p else "" for p in parts)
    if query:
        keys = [pair.partition("=")[0] for pair in query.split("&") if pair]
        out += "?" + "&".join(f"{k}=***" for k in keys)
    return out


def _secret_fragments(url: str) -> set[str]:
    """The substrings of `url` that redact_apprise_url hides: scrubbed from third-party logs."""
    if "://" not in url:
        return {url}
    scheme, userinfo, host, path, query = _split(url)
    pieces = [url, *re.split(r"[:]", userinfo, maxsplit=1)]
    if scheme.lower() in _HOST_SCHEMES:
        pieces += [s for s in path.split("/") if _looks_secret(s)]
    else:
        pieces += [host, *host.split(":"), *path.split("/")]
    pieces += [pair.partition("=")[2] for pair in query.split("&")]
    found = {p for p in pieces if len(p) >= 3}
    return found | {unquote(p) for p in found}


class _Scrubber(logging.Filter):
    """Masks known URL secrets in records of the libraries that do the delivery."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, fragments: set[str]) -> None:
        with self._lock:
            self.secrets |= fragments

    def scrub(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self.secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return True
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_SCRUBBER = _Scrubber()
for _name in ("apprise", "urllib3.connectionpool", "requests"):
    logging.getLogger(_name).addFilter(_SCRUBBER)


class _Capture(logging.Handler):
    """Collects apprise's warnings for the delivery running in this context: they say why it
    failed. A context variable, not the thread, because apprise may run a plugin on its own
    worker thread (with a copy of our context)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        messages = _CAPTURED.get()
        if messages is not None:
            messages.append(_SCRUBBER.scrub(record.getMessage()))


_CAPTURED: ContextVar[list[str] | None] = ContextVar("memvault_alert_capture", default=None)
logging.getLogger("apprise").addHandler(_Capture())


class _Target:
    """One apprise URL, with its own apprise.Apprise so its result is known separately."""

    def __init__(self, url: str, timeout: float) -> None:
        import apprise

        self.url = url
        self.redacted = redact_apprise_url(url)
        _SCRUBBER.add(_secret_fragments(url))
        asset = apprise.AppriseAsset(async_mode=False)  # deliver in our thread, bounded by us
        plugin = apprise.Apprise.instantiate(url, asset=asset) if url.strip() else None
        if plugin is None:
            raise ConfigError(
                f"MEMVAULT_ALERT_URLS: apprise cannot use the URL {self.redacted} (unknown "
                "scheme, a missing part such as the host or token, or a service whose plugin "
                "needs an extra package)",
                hint="fix the URL (forms: https://github.com/caronc/apprise/wiki), e.g. "
                "tgram://BOT_TOKEN/CHAT_ID or json://hooks.example.com/memvault, then run "
                "`memvault alerts test`",
            )
        # Socket timeouts bound each request; a URL's smaller cto=/rto= is kept.
        plugin.socket_connect_timeout = min(float(plugin.socket_connect_timeout), timeout)
        plugin.socket_read_timeout = min(float(plugin.socket_read_timeout), timeout)
        self.apprise = apprise.Apprise(asset=asset)
        self.apprise.add(plugin)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AlertManager:
    """Alert state, the `memvault_alerts_firing` / `memvault_notifications_total` metrics, and
    delivery to apprise URLs. Thread-safe; fire()/resolve() deliver synchronously, each attempt
    bounded by `timeout` seconds per URL (so a call takes at most about
    urls * (retries + 1) * timeout plus the backoff)."""

    def __init__(
        self,
        urls: list[str],
        *,
        registry: CollectorRegistry | None = None,
        instance: str = "",
        retries: int = 2,
        timeout: float = 10.0,
        backoff: float = 0.5,
    ) -> None:
        self.instance = instance or f"memvault on {socket.gethostname()}"
        self.retries = max(0, retries)
        self.timeout = timeout
        self.backoff = backoff
        self._targets = [_Target(url, timeout) for url in urls]
        self._lock = threading.Lock()  # state
        self._send_lock = threading.RLock()  # keeps FIRING/RESOLVED in order; re-entered below
        self._firing: dict[str, dict[str, Any]] = {}
        self._counts = {"sent": 0, "failed": 0}
        self._last_error: str | None = None
        # None: a private registry (nothing exported), so several managers can coexist.
        registry = registry if registry is not None else CollectorRegistry()
        self._gauge = Gauge("memvault_alerts_firing", "1 while the named alert is firing.",
                            ["alert"], registry=registry)
        self._counter = Counter("memvault_notifications_total",
                                "Alert notifications by result (sent, failed).", ["result"],
                                registry=registry)
        for name in ALERTS:
            self._gauge.labels(alert=name).set(0)
        for result in ("sent", "failed"):
            self._counter.labels(result=result)

    # -- public interface ---------------------------------------------------------------

    def fire(self, name: Alert, summary: str, details: dict[str, Any] | None = None) -> bool:
        """Start firing `name`; True if this call changed the state (no re-send while firing)."""
        return self._fire(name, summary, details or {}, exclude=set())

    def resolve(self, name: Alert, summary: str = "") -> bool:
        """Stop firing `name` and send the resolve message; a no-op if it is not firing."""
        severity = self._severity(name)
        with self._lock:
            state = self._firing.pop(name, None)
            if state is None:
                return False
            self._gauge.labels(alert=name).set(0)
        text = summary or "back to normal"
        log.info("alert RESOLVED %s: %s (firing since %s)", name, text, state["since"])
        title = f"[RESOLVED] {name}: {text}"
        body = "\n".join([
            f"{name} ({severity}) on {self.instance} is resolved.",
            text,
            f"was: {state['summary']}",
            f"firing since: {state['since']}",
            f"resolved at: {_now()}",
        ])
        self._deliver(name, title, body, "success", exclude=set())
        return True

    def firing(self) -> dict[str, dict[str, Any]]:
        """name -> {"summary", "since", "severity", "details"} of every firing alert."""
        with self._lock:
            return copy.deepcopy(self._firing)

    def test(self) -> list[Delivery]:
        """Send a test notification to every URL; the results also raise or resolve
        NotifierFailing, as any delivery does."""
        title = "[TEST] memvault alert test"
        body = (f"A test notification from {self.instance}, sent at {_now()}. If you read "
                "this, memvault's alerts reach you here.")
        return self._deliver("test", title, body, "info", exclude=set())

    def notify(self, title: str, body: str) -> list[Delivery]:
        """Send a plain notification (the daily digest, an automatic restore with loss) to
        every URL; a failed delivery counts and raises NotifierFailing like any other."""
        return self._deliver("digest", title, body, "info", exclude=set())

    def status(self) -> dict[str, Any]:
        with self._lock:
            report: dict[str, Any] = {
                "urls": [t.redacted for t in self._targets],
                "configured": bool(self._targets),
                "firing": copy.deepcopy(self._firing),
                "notifications": dict(self._counts),
                "last_error": self._last_error,
            }
        if not self._targets:
            report["message"] = ("no notifier is configured: alerts only change "
                                 "memvault_alerts_firing and the log; set MEMVAULT_ALERT_URLS")
        return report

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _severity(name: str) -> str:
        if name not in ALERTS:
            raise ValueError(f"unknown alert {name!r}; known: {', '.join(ALERTS)}")
        return ALERTS[name]

    def _fire(self, name: Alert, summary: str, details: dict[str, Any],
              exclude: set[str]) -> bool:
        severity = self._severity(name)
        since = _now()
        with self._lock:
            if name in self._firing:  # still firing: keep state fresh, send nothing
                self._firing[name].update(summary=summary, details=copy.deepcopy(details))
                return False
            self._firing[name] = {"summary": summary, "since": since, "severity": severity,
                                  "details": copy.deepcopy(details)}
            self._gauge.labels(alert=name).set(1)
        level = logging.ERROR if severity == CRITICAL else logging.WARNING
        log.log(level, "alert FIRING %s (%s) on %s: %s", name, severity, self.instance, summary)
        lines = [f"{name} ({severity}) on {self.instance}", summary, f"since: {since}"]
        lines += [f"{key}: {value}" for key, value in details.items() if key != "hint"]
        if details.get("hint"):
            lines.append(f"What to do: {details['hint']}")
        title = f"[FIRING] {name}: {summary}"
        kind = "failure" if severity == CRITICAL else "warning"
        self._deliver(name, title, "\n".join(lines), kind, exclude=exclude)
        return True

    def _deliver(self, name: str, title: str, body: str, kind: str,
                 exclude: set[str]) -> list[Delivery]:
        targets = [t for t in self._targets if t.url not in exclude]
        with self._send_lock:
            results = [(t, self._send(t, title, body, kind)) for t in targets]
        if name == Alert.NotifierFailing:  # never recurse on the notifier's own alert
            return [d for _, d in results]
        failed = [(t, d) for t, d in results if not d.ok]
        if failed:
            self._fire(Alert.NotifierFailing, self._failing_summary(failed), {
                "failing": ", ".join(d.url for _, d in failed),
                "cause": "; ".join(f"{d.url}: {d.error}" for _, d in failed),
                "hint": "check each failing URL's host, token and network path, then run "
                        "`memvault alerts test`",
            }, exclude={t.url for t, _ in failed})
        elif results and len(results) == len(self._targets):
            self.resolve(Alert.NotifierFailing, "notifications reach every configured URL again")
        return [d for _, d in results]

    def _failing_summary(self, failed: list[tuple[_Target, Delivery]]) -> str:
        return (f"{len(failed)} of {len(self._targets)} alert URLs cannot be reached: "
                + ", ".join(d.url for _, d in failed))

    def _send(self, target: _Target, title: str, body: str, kind: str) -> Delivery:
        attempts = self.retries + 1
        error = "unknown error"
        for attempt in range(attempts):
            ok, error = self._attempt(target, title, body, kind)
            if ok:
                with self._lock:
                    self._counts["sent"] += 1
                self._counter.labels(result="sent").inc()
                return Delivery(url=target.redacted, ok=True, error=None)
            if attempt + 1 < attempts:
                time.sleep(self.backoff * 2**attempt)
        log.error("alert notification %r to %s failed after %d attempt(s): %s",
                  title, target.redacted, attempts, error)
        with self._lock:
            self._counts["failed"] += 1
            self._last_error = f"{_now()} {target.redacted}: {error}"
        self._counter.labels(result="failed").inc()
        return Delivery(url=target.redacted, ok=False, error=error)

    def _attempt(self, target: _Target, title: str, body: str,
                 kind: str) -> tuple[bool, str | None]:
        """One delivery in a helper thread, so that no plugin can hold the caller past
        `timeout`."""
        outcome: list[tuple[bool, str | None]] = []

        def run() -> None:
            messages: list[str] = []
            _CAPTURED.set(messages)  # this thread's own context
            error: str | None = None
            try:
                ok = bool(target.apprise.notify(body=body, title=title, notify_type=kind))
            except Exception as exc:  # a plugin bug must not break the caller
                ok, error = False, _SCRUBBER.scrub(f"{type(exc).__name__}: {exc}")
            if not ok and error is None:
                error = ("; ".join(dict.fromkeys(messages))
                         or "the service did not accept the notification")
            outcome.append((ok, error))  # last: the caller reads it only once complete

        worker = threading.Thread(target=run, name="memvault-alert", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if not outcome:
            return False, f"no answer within {self.timeout:g}s"
        return outcome[0]
