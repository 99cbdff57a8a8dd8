"""A chat-completions server (OpenAI protocol, also Ollama's /v1) with scripted answers.

`answers` is consumed in order: a string becomes choices[0].message.content of a 200 answer,
an (int, json) tuple is sent as that HTTP status, a callable gets the request body and returns
the content (for answers that depend on the prompt). With nothing scripted it answers 500, so an
unexpected extra call fails the test loudly instead of passing quietly.
"""

from __future__ import annotations

import json
from typing import Any

from tests.peers.http_peer import HTTPPeer


class ChatServer(HTTPPeer):
    def __init__(self, answers: list[Any] | None = None, *, api_key: str | None = None) -> None:
        self.answers: list[Any] = list(answers or [])
        self.api_key = api_key
        super().__init__({("POST", "/v1/chat/completions"): self._chat})

    def script(self, *answers: Any) -> None:
        self.answers.extend(answers)

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]

    def _chat(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided"}}
        if not isinstance(body.get("messages"), list) or not body.get("model"):
            return 400, {"error": {"message": "model and messages are required"}}
        if not self.answers:
            return 500, {"error": {"message": "no scripted answer left"}}
        answer = self.answers.pop(0)
        if isinstance(answer, tuple):
            return answer
        if callable(answer):
            answer = answer(body)
        if not isinstance(answer, str):
            answer = json.dumps(answer)
        return 200, {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
