"""infer=True, the LLM's half: extract facts from a conversation, and decide ADD / UPDATE /
DELETE / NONE for each against the most similar stored memories. The decisions are returned,
never applied here: the Memory service applies them (memory/infer.py), so every change lands in
the journal. The model's JSON is parsed strictly; one retry tells it what was wrong; a second
failure raises LLMError, never an empty success."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from memvault.errors import LLMError
from memvault.llm import prompts

if TYPE_CHECKING:
    from memvault.llm.client import ChatClient

log = logging.getLogger("memvault.llm")

MAX_FACTS = 50

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096)]


class Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    facts: list[Text]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str | None = None
    text: Annotated[str, StringConstraints(max_length=4096)] = ""
    event: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    old_memory: str | None = None


class Decisions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    memory: list[Decision]


M = TypeVar("M", bound=BaseModel)
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


def parse_answer(answer: str, model: type[M]) -> M:
    """Strict: one JSON object matching `model` (a single surrounding code fence is allowed,
    as chat models add one even in JSON mode)."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    return model.model_validate_json(text)


def ask(
    client: ChatClient,
    messages: list[dict[str, str]],
    model: type[M],
    check: Callable[[M], None] | None = None,
) -> M:
    """Ask, parse and check; on a bad answer ask once more with the error, then give up."""
    answer = client.complete(messages)
    for attempt in (1, 2):
        try:
            parsed = parse_answer(answer, model)
            if check is not None:
                check(parsed)
            return parsed
        except (ValidationError, ValueError) as exc:
            error = _describe(exc)
            log.warning("LLM %s answer %d was unusable: %s", client.url, attempt, error)
            if attempt == 2:
                raise LLMError(
                    f"the LLM at {client.url} ({client.model}) answered with unusable JSON "
                    f"twice: {error}",
                    hint="use a model that follows JSON instructions, or pass infer=false to "
                    "store the messages verbatim",
                ) from None
            messages = [*messages, {"role": "assistant", "content": answer},
                        {"role": "user", "content": prompts.RETRY.format(error=error)}]
            answer = client.complete(messages)
    raise AssertionError("unreachable")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
                 for e in exc.errors()[:5]]
        return "; ".join(parts)
    return str(exc)


def extract_facts(client: ChatClient, conversation: str, prompt: str | None = None, *,
                  instructions: str | None = None, observed: str | None = None) -> list[str]:
    """`prompt` replaces memvault's extraction instructions, `instructions` are added to them,
    `observed` is the date the conversation took place (default: today)."""
    today = datetime.now(UTC).date().isoformat()
    system = prompts.extraction_prompt(today, prompt, instructions=instructions,
                                       observed=observed)
    facts = ask(client, [{"role": "system", "content": system},
                         {"role": "user", "content": conversation}], Facts).facts
    unique = list(dict.fromkeys(facts))  # a repeated fact is one fact
    return unique[:MAX_FACTS]


def decide(client: ChatClient, existing: dict[str, str], facts: list[str],
           rules: str | None = None) -> list[Decision]:
    """`rules` replaces memvault's description of the four events (not the answer format)."""
    def check(parsed: Decisions) -> None:
        seen: set[str] = set()
        for item in parsed.memory:
            if item.event == "ADD":
                if not item.text.strip():
                    raise ValueError("an ADD event has empty text")
                continue
            if item.id not in existing:
                raise ValueError(f"{item.event} names id {item.id!r}, which is not one of "
                                 f"{sorted(existing)}")
            if item.id in seen:
                raise ValueError(f"id {item.id!r} has more than one event")
            seen.add(item.id)
            if item.event == "UPDATE" and not item.text.strip():
                raise ValueError(f"UPDATE of id {item.id!r} has empty text")

    content = prompts.reconcile_prompt(existing, facts, rules)
    return ask(client, [{"role": "user", "content": content}], Decisions, check).memory
