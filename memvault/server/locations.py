"""Where the data lives, hidden from callers who are not the admin.

`/readyz` answers without authentication (load balancers and orchestrators probe it), so its
failing checks say *why* (codes, alert names, the failure's wording) but not *where*: no SQLite
path, data directory, database URL, host, port, database or user name. The same holds for the
5xx error bodies of every other route (the server log keeps the whole message).
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path

from starlette.requests import Request

from memvault.config import Settings, redact_url
from memvault.server.deps import context_of

HIDDEN = "<hidden>"
# libpq's keyword spelling and memvault's own "host=h port=p database=d user=u".
_KEYWORD = re.compile(r"\b(host|hostaddr|port|dbname|database|user)=(\"[^\"]*\"|'[^']*'|\S+)")


class LocationHider:
    """Replaces every location the settings name (paths, URLs, PostgreSQL host, port, database
    and user) in a message with <hidden>."""

    def __init__(self, settings: Settings) -> None:
        url = settings.database_url or ""
        exact = {str(settings.data_dir), redact_url(url), url,
                 *settings.backup_urls, *(redact_url(u) for u in settings.backup_urls)}
        words: set[str] = set()
        if settings.sqlite_path is not None:
            path = settings.sqlite_path
            exact |= {str(path), str(path.parent), str(Path(path).resolve().parent)}
        else:
            words |= _postgres_parts(url)
        self._exact = sorted((s for s in exact if len(s) >= 2), key=len, reverse=True)
        self._words = [re.compile(rf"(?<![\w/.-]){re.escape(w)}(?![\w/.-])")
                       for w in sorted(words, key=len, reverse=True)]

    def __call__(self, text: str) -> str:
        for value in self._exact:
            text = text.replace(value, HIDDEN)
        text = _KEYWORD.sub(rf"\1={HIDDEN}", text)
        for word in self._words:
            text = word.sub(HIDDEN, text)
        return text


def _postgres_parts(url: str) -> set[str]:
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
    except Exception:  # not parsable: the exact URL is hidden all the same
        return set()
    parts = {str(params[k]) for k in ("host", "hostaddr", "dbname", "user") if params.get(k)}
    for host in list(parts):
        parts |= {h for h in host.split(",") if h}  # multi-host DSNs
    return {p for p in parts if len(p) >= 3}


def caller_is_admin(request: Request) -> bool:
    """The admin key was sent (or the server runs open). Decided from the headers alone: a
    probe must work while the store, where scoped keys live, is down."""
    admin_key = context_of(request).admin_key
    if admin_key is None:
        return True
    token = request.headers.get("x-api-key")
    if not token:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        token = credentials.strip() if scheme.lower() in ("bearer", "token") else ""
    return bool(token) and hmac.compare_digest(token.encode(), admin_key.encode())
