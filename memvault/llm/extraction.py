"""infer=True: extract facts with an LLM, reconcile them with the namespace's most similar
memories, and apply ADD / UPDATE / DELETE / NONE through the Memory service (so every change
lands in the journal). The model's JSON is parsed strictly; one retry tells it what was wrong;
a second failure raises LLMError, never an empty success."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from memvault.errors import LLMError
from memvault.llm import prompts
from memvault.store.records import MemoryRecord, utc_now

if TYPE_CHECKING:
    from memvault.llm.client import ChatClient
    from memvault.memory.service import Memory

log = logging.getLogger("memvault.llm")

# How many stored memories each fact is compared with (mem0 uses 5).
SIMILAR_PER_FACT = 5
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


def extract_facts(client: ChatClient, conversation: str, prompt: str | None = None) -> list[str]:
    today = datetime.now(UTC).date().isoformat()
    system = (prompt + prompts.CUSTOM_EXTRACTION_SUFFIX if prompt
              else prompts.FACT_EXTRACTION.format(today=today))
    facts = ask(client, [{"role": "system", "content": system},
                         {"role": "user", "content": conversation}], Facts).facts
    unique = list(dict.fromkeys(facts))  # a repeated fact is one fact
    return unique[:MAX_FACTS]


def decide(client: ChatClient, existing: dict[str, str], facts: list[str]) -> list[Decision]:
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

    content = prompts.reconcile_prompt(existing, facts)
    return ask(client, [{"role": "user", "content": content}], Decisions, check).memory


def infer_memories(
    memory: Memory,
    items: list[dict[str, Any]],
    entities: dict[str, str],
    *,
    metadata: dict[str, Any] | None,
    expiration_date: str | None,
    memory_type: str | None,
    prompt: str | None,
    actor: str | None,
) -> dict[str, Any]:
    """Extract, reconcile and apply; returns mem0's {"results": [{id, memory, event, ...}]}."""
    conversation = "\n".join(f"{m['role']}: {m['content']}" for m in items
                             if m["role"] != "system")
    if not conversation:
        from memvault.errors import InvalidInput

        raise InvalidInput("messages hold only system messages; nothing to remember")
    client = memory.llm
    facts = extract_facts(client, conversation, prompt)
    if not facts:
        return {"results": []}

    # Stored memories most similar to any fact, numbered so the model never sees (or has to
    # copy) a UUID: it answers with "0", "1", ... and we map back.
    similar: dict[str, str] = {}
    for fact in facts:
        for hit in memory.search(fact, **entities, top_k=SIMILAR_PER_FACT,
                                 threshold=None)["results"]:
            similar.setdefault(hit["id"], hit["memory"])
    real_ids = dict(enumerate(similar))
    existing = {str(n): similar[memory_id] for n, memory_id in real_ids.items()}
    if existing:
        decisions = decide(client, existing, facts)
    else:
        decisions = [Decision(event="ADD", text=fact) for fact in facts]

    results: list[dict[str, Any]] = []
    now = utc_now()
    additions = [
        MemoryRecord(
            id=str(uuid.uuid4()), memory=d.text.strip(), hash=_hash(d.text.strip()),
            created_at=now, updated_at=now, metadata=metadata, expiration_date=expiration_date,
            memory_type=memory_type, **entities,
        )
        for d in decisions if d.event == "ADD"
    ]
    for decision in decisions:
        if decision.event in ("ADD", "NONE"):
            continue
        memory_id = real_ids[int(decision.id or "0")]
        old = similar[memory_id]
        if decision.event == "UPDATE":
            memory.update(memory_id, text=decision.text.strip(), actor=actor)
            results.append({"id": memory_id, "memory": decision.text.strip(), "event": "UPDATE",
                            "previous_memory": old})
        else:
            memory.delete(memory_id, actor=actor)
            results.append({"id": memory_id, "memory": old, "event": "DELETE"})
    if additions:
        for added in memory.add_records(additions, actor=actor):
            if added["event"] == "ADD":  # NONE: the namespace already holds this exact text
                results.append({"id": added["id"], "memory": added["memory"], "event": "ADD"})
    log.info("infer: %d facts -> %s", len(facts), json.dumps(
        {e: sum(1 for r in results if r["event"] == e) for e in ("ADD", "UPDATE", "DELETE")}))
    return {"results": results}


def _hash(text: str) -> str:
    from memvault.memory.service import text_hash

    return text_hash(text)
