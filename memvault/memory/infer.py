"""infer=True: extract facts with the LLM, reconcile them with the namespace's most similar
memories, and apply the LLM's ADD / UPDATE / DELETE / NONE decisions through the Memory service,
so every change lands in the journal (the LLM package only decides; it imports no memory)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from memvault.errors import InvalidInput
from memvault.llm import Decision, decide, extract_facts
from memvault.store import MemoryRecord, text_hash, utc_now

if TYPE_CHECKING:
    import numpy as np

    from memvault.config import Settings
    from memvault.llm import ChatClient

log = logging.getLogger("memvault.llm")

# How many stored memories each fact is compared with (mem0 uses 5).
SIMILAR_PER_FACT = 5


class InferTarget(Protocol):
    """What inferring needs of the Memory service (a Protocol: the service imports this module
    when infer=True, so this module cannot import the service back)."""

    @property
    def llm(self) -> ChatClient: ...

    settings: Settings

    def search(self, query: str, **kwargs: Any) -> dict[str, Any]: ...

    def update(self, memory_id: str, text: str | None = None, **kwargs: Any) -> Any: ...

    def delete(self, memory_id: str, *, actor: str | None = None) -> dict[str, str]: ...

    def add_records(self, records: list[MemoryRecord], vectors: np.ndarray | None = None,
                    **kwargs: Any) -> list[dict[str, Any]]: ...


def infer_memories(
    memory: InferTarget,
    items: list[dict[str, Any]],
    entities: dict[str, str],
    *,
    metadata: dict[str, Any] | None,
    expiration_date: str | None,
    memory_type: str | None,
    prompt: str | None,
    actor: str | None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """Extract, reconcile and apply; returns mem0's {"results": [{id, memory, event, ...}]}.
    `prompt` (the call's) or MEMVAULT_LLM_EXTRACTION_PROMPT replaces the extraction
    instructions, MEMVAULT_LLM_INSTRUCTIONS are added to them, MEMVAULT_LLM_UPDATE_PROMPT
    replaces the reconcile rules; `created_at` (add's `timestamp`) dates the conversation and
    the memories it adds."""
    conversation = "\n".join(f"{m['role']}: {m['content']}" for m in items
                             if m["role"] != "system")
    if not conversation:
        raise InvalidInput("messages hold only system messages; nothing to remember")
    client = memory.llm
    settings = memory.settings
    facts = extract_facts(client, conversation, prompt or settings.llm_extraction_prompt,
                          instructions=settings.llm_instructions,
                          observed=created_at[:10] if created_at else None)
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
        decisions = decide(client, existing, facts, settings.llm_update_prompt)
    else:
        decisions = [Decision(event="ADD", text=fact) for fact in facts]

    results: list[dict[str, Any]] = []
    now = created_at or utc_now()
    additions = [
        MemoryRecord(
            id=str(uuid.uuid4()), memory=d.text.strip(), hash=text_hash(d.text.strip()),
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
