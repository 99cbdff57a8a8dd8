"""The one place that hides secrets in text shown to people: URLs, DSNs, environment lines.

A PostgreSQL password reaches memvault in several spellings and every one must be hidden:
`postgresql://u:P@h/db` (userinfo), `postgresql:///db?host=h&password=P` (query),
`host=h password=P` or `password='P q'` (libpq keyword DSN), `PGPASSWORD=P` (environment
style), `sslpassword=P`. S3 and embedder URLs carry keys the same ways (`?secret_key=`,
`?api_key=`, `?token=`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

MASK = "***"

# URL userinfo: keep the user name, hide what follows its ':' up to the '@'.
_USERINFO = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
# key=value where the key names a secret (query strings, keyword DSNs, environment lines).
# A quoted keyword value may hold spaces and escaped quotes (libpq's rules).
_SECRET_PARAM = re.compile(
    r"(?i)((?:^|(?<=[\s?&;,\"'{(]))[\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|"
    r"access[_-]?key|signature|credential)[\w.-]*\s*[=:]\s*)"
    r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,'\"}\])]+)"
)
# Environment variables whose values are libpq or cloud secrets, read by drivers directly.
SECRET_ENVIRONMENT = ("PGPASSWORD", "PGSSLPASSWORD", "AWS_SECRET_ACCESS_KEY",
                      "AWS_SESSION_TOKEN")


def redact_url(text: str) -> str:
    """Hide every password, key or token a URL, DSN or environment line may carry in `text`:
    postgresql://u:secret@h/db?sslpassword=x -> postgresql://u:***@h/db?sslpassword=***."""
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, text)


def dsn_secrets(url: str) -> list[str]:
    """The passwords a PostgreSQL URL or keyword DSN carries, in whatever spelling (none when
    it is not a PostgreSQL DSN): their literal values are masked wherever they show up."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
    except Exception:  # not a DSN (a sqlite:/// URL) or unparsable: nothing to learn here
        return []
    return [str(params[key]) for key in ("password", "sslpassword") if params.get(key)]


def environment_secrets() -> list[str]:
    """Values of the secret environment variables drivers read on their own (PGPASSWORD)."""
    return [os.environ[name] for name in SECRET_ENVIRONMENT if os.environ.get(name)]


class Redactor:
    """`redact_url` plus the literal values of known secrets (configured keys, the database
    password in any spelling, PGPASSWORD), longest first so no fragment survives."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._values = sorted({s for s in secrets if s and len(s) >= 4}, key=len,
                              reverse=True)

    def __call__(self, text: str) -> str:
        text = redact_url(text)
        for value in self._values:
            text = text.replace(value, MASK)
        return text
