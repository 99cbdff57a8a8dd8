"""While the store is empty or replaced, the memory routes answer 503 `store_refused`: an
emptied store must not answer "no memories" (the incident's 17 days), nor a replaced one serve
or take another store's data (writes would fork the lineage). A SQLite file deleted under the
server is refused too: writes would go to the deleted file and be lost at the next restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from memvault.guard.checks import Verdict

DATA_PREFIXES = ("/memories", "/search", "/reset", "/entities")


class RefuseUnguardedStore:
    """ASGI layer: 503 `store_refused` for data routes while the store is refused
    (`Verdict.refusing_data`: StoreEmpty, StoreReplaced, a swapped SQLite file);
    `verdict()` gives the running guard's last verdict (None: no guard, nothing refused)."""

    def __init__(self, app: Any, verdict: Callable[[], Verdict | None]) -> None:
        self.app = app
        self.verdict = verdict

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(DATA_PREFIXES):
            verdict = self.verdict()
            refused = verdict.refusing_data() if verdict else []
            if refused:
                body = json.dumps({
                    "detail": "; ".join(f"{f.alert}: {f.summary}" for f in refused),
                    "code": "store_refused", "alerts": [f.alert for f in refused],
                    "hint": str(refused[0].details.get("hint", "")),
                    "request_id": (scope.get("state") or {}).get("request_id")}).encode()
                await send({"type": "http.response.start", "status": 503, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), (b"retry-after", b"30")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
