"""A small client for OpenAI-compatible chat completions (OpenAI, vLLM, LM Studio, Ollama /v1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from memvault.errors import LLMError, LLMNotConfigured

if TYPE_CHECKING:
    from memvault.config import Settings

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
OLLAMA_DEFAULT_URL = "http://127.0.0.1:11434/v1"


class ChatClient:
    """POST {base_url}/chat/completions, JSON mode, temperature 0; errors name the URL."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    @property
    def url(self) -> str:
        return self.base_url + "/chat/completions"

    def close(self) -> None:
        self._client.close()

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's text for `messages`. Transport errors, 429 and 5xx are retried."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        last: str = ""
        for _attempt in range(self._retries + 1):
            try:
                response = self._client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                last = f"cannot reach the LLM at {self.url}: {type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"the LLM at {self.url} answered HTTP {response.status_code}: " \
                       f"{response.text[:200]}"
                continue
            if response.status_code != 200:
                raise LLMError(
                    f"the LLM at {self.url} answered HTTP {response.status_code}: "
                    f"{response.text[:200]}",
                    hint="check MEMVAULT_LLM (model name), MEMVAULT_LLM_URL and "
                    "MEMVAULT_LLM_API_KEY",
                )
            return self._content(response)
        raise LLMError(last, hint="check MEMVAULT_LLM_URL and that the LLM server is running; "
                       "pass infer=false to store the messages verbatim meanwhile")

    def _content(self, response: httpx.Response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(
                f"the LLM at {self.url} answered without choices[0].message.content: "
                f"{response.text[:200]!r}"
            ) from None
        if not isinstance(content, str):
            raise LLMError(f"the LLM at {self.url} answered with non-text content")
        return content


def make_llm(settings: Settings) -> ChatClient:
    """The client for MEMVAULT_LLM = 'openai:<model>' or 'ollama:<model>'."""
    spec = settings.llm
    if not spec:
        raise LLMNotConfigured("no LLM is configured",
                               hint="set MEMVAULT_LLM=openai:<model> or ollama:<model>")
    provider, _, model = spec.partition(":")
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    if provider == "openai":
        url = settings.llm_url or OPENAI_DEFAULT_URL
    elif provider == "ollama":
        url = settings.llm_url or OLLAMA_DEFAULT_URL
        if urlsplit(url).path.strip("/") == "":
            url = url.rstrip("/") + "/v1"  # Ollama's OpenAI-compatible API lives under /v1
    else:
        raise LLMNotConfigured(
            f"unknown LLM provider in {spec!r}",
            hint="use openai:<model> (any compatible endpoint) or ollama:<model>",
        )
    return ChatClient(model, url, api_key=key, timeout=settings.llm_timeout)
