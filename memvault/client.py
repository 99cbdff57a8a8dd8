"""`MemoryClient`: the `Memory` API over HTTP, against `memvault serve` (or mem0's server).

Same methods and return values as `Memory`. Errors come back as the same classes (NotFound and
InvalidInput are ValueErrors, as mem0 callers expect); a server that cannot be reached raises
ServerUnreachable naming the address tried, so a script pointed at a stale port fails loudly.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import httpx

from memvault import errors

_UNSET: Any = object()

# The server's precise error class name ("error") wins over mem0's coarser "code".
_BY_CODE: dict[str, type[errors.MemvaultError]] = {
    cls.code: cls
    for cls in (
        errors.ConfigError, errors.StoreError, errors.StoreUnavailable, errors.SchemaError,
        errors.EmbedderError, errors.EmbedderMismatch, errors.LLMError, errors.LLMNotConfigured,
    )
}
_BY_STATUS: dict[int, type[errors.MemvaultError]] = {
    400: errors.InvalidInput, 404: errors.NotFound, 401: errors.Unauthorized,
    403: errors.Forbidden, 413: errors.InvalidInput, 422: errors.InvalidInput,
}


class MemoryClient:
    def __init__(self, url: str = "http://127.0.0.1:8888", api_key: str | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _call(self, method: str, path: str, *, body: Any = None,
              params: dict[str, Any] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=body, params=query)
        except httpx.TimeoutException as exc:
            raise errors.ServerUnreachable(
                f"memvault at {self.url} did not answer {method} {path} in time "
                f"({type(exc).__name__})",
                hint="check that the server is running and not overloaded; raise timeout=",
            ) from None
        except httpx.HTTPError as exc:
            raise errors.ServerUnreachable(
                f"cannot reach memvault at {self.url}: {type(exc).__name__}: {exc}",
                hint="check the URL and port (MEMVAULT_URL / --url) and that `memvault serve` "
                "is running",
            ) from None
        if response.status_code >= 400:
            raise _error(response, method, path, self.url)
        return response.json()

    # ------------------------------------------------------------------ writes

    def add(
        self,
        messages: Any,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        infer: bool = True,
        expiration_date: str | None = None,
        memory_type: str | None = None,
        prompt: str | None = None,
        timestamp: Any = None,
    ) -> dict[str, Any]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        elif isinstance(messages, dict):
            messages = [messages]
        body = {"messages": messages, "user_id": user_id, "agent_id": agent_id,
                "run_id": run_id, "metadata": metadata, "infer": infer,
                "expiration_date": expiration_date, "memory_type": memory_type,
                "prompt": prompt, "timestamp": _jsonable(timestamp)}
        return self._call("POST", "/memories",  # type: ignore[no-any-return]
                          body={k: v for k, v in body.items() if v is not None})

    def update(
        self,
        memory_id: str,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        expiration_date: Any = _UNSET,
        data: str | None = None,
    ) -> dict[str, str]:
        body: dict[str, Any] = {"text": text if text is not None else data}
        if metadata is not None:
            body["metadata"] = metadata
        if expiration_date is not _UNSET:
            body["expiration_date"] = expiration_date
        self._call("PUT", f"/memories/{_id(memory_id)}", body=body)
        return {"message": "Memory updated successfully!"}

    def delete(self, memory_id: str) -> dict[str, str]:
        self._call("DELETE", f"/memories/{_id(memory_id)}")
        return {"message": "Memory deleted successfully!"}

    def delete_all(self, user_id: str | None = None, agent_id: str | None = None,
                   run_id: str | None = None) -> dict[str, str]:
        self._call("DELETE", "/memories",
                   params={"user_id": user_id, "agent_id": agent_id, "run_id": run_id})
        return {"message": "Memories deleted successfully!"}

    def reset(self) -> None:
        self._call("POST", "/reset")

    # ------------------------------------------------------------------ reads

    def get(self, memory_id: str) -> dict[str, Any] | None:
        try:
            item = self._call("GET", f"/memories/{_id(memory_id)}")
        except errors.NotFound:
            return None
        item.pop("score", None)  # Memory.get has no score key
        return item  # type: ignore[no-any-return]

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int = 20,
        limit: int | None = None,
        show_expired: bool = False,
    ) -> dict[str, Any]:
        params = {"user_id": user_id, "agent_id": agent_id, "run_id": run_id,
                  "top_k": limit if limit is not None else top_k,
                  "show_expired": str(bool(show_expired)).lower(),
                  "filters": json.dumps(filters) if filters is not None else None}
        return self._call("GET", "/memories", params=params)  # type: ignore[no-any-return]

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int = 20,
        limit: int | None = None,
        threshold: float | None = 0.1,
        rerank: bool = False,
        explain: bool = False,
        show_expired: bool = False,
        search_mode: str | None = None,
        reference_date: Any = None,
    ) -> dict[str, Any]:
        body = {"query": query, "user_id": user_id, "agent_id": agent_id, "run_id": run_id,
                "filters": filters, "top_k": top_k, "limit": limit, "threshold": threshold,
                "rerank": rerank, "explain": explain, "show_expired": show_expired,
                "search_mode": search_mode, "reference_date": _jsonable(reference_date)}
        body = {k: v for k, v in body.items() if v is not None or k == "threshold"}
        return self._call("POST", "/search", body=body)  # type: ignore[no-any-return]

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        try:
            return self._call(  # type: ignore[no-any-return]
                "GET", f"/memories/{_id(memory_id)}/history")
        except errors.NotFound:
            return []  # as Memory.history: no journal entries

    def entities(self) -> list[dict[str, Any]]:
        return self._call("GET", "/entities")  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        """The server's `GET /status` report (the JSON of `memvault status --json`)."""
        return self._call("GET", "/status")  # type: ignore[no-any-return]


def _jsonable(moment: Any) -> Any:
    """A date or datetime as ISO-8601 (the server reads it as Memory does); else as given."""
    return moment.isoformat() if isinstance(moment, date) else moment


def _id(memory_id: Any) -> str:
    from memvault.memory.validation import check_memory_id

    return check_memory_id(memory_id)  # a malformed id fails here, as in Memory


def _error(response: httpx.Response, method: str, path: str, url: str) -> errors.MemvaultError:
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:300]}
    if not isinstance(body, dict):
        body = {"detail": body}
    detail = body.get("detail")
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}"
            if isinstance(e, dict) else str(e) for e in detail)
    message = str(detail or f"HTTP {response.status_code}")
    cls = (_BY_CODE.get(str(body.get("error"))) or _BY_CODE.get(str(body.get("code")))
           or _BY_STATUS.get(response.status_code) or errors.MemvaultError)
    if response.status_code >= 500:
        rid = body.get("request_id") or response.headers.get("x-request-id")
        message = f"memvault at {url} failed {method} {path} (HTTP {response.status_code}, " \
                  f"request {rid}): {message}"
    return cls(message)
