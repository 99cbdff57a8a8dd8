"""Prompts for the two LLM steps: extract facts, then reconcile them with stored memories."""

from __future__ import annotations

import json

FACT_EXTRACTION = """You extract durable facts worth remembering from a conversation, for a \
long-term memory used by an AI assistant. Today is {today}.

Keep personal details, preferences, plans, relationships, health, work, and anything the user \
asks to remember. Write each fact as one short, self-contained sentence in the language of the \
conversation (e.g. "Is vegetarian", "Lives in Lisbon", "Daughter's name is Ana"). Ignore \
greetings, small talk and facts about the assistant itself.

Answer with only a JSON object of this exact shape, no other keys and no prose:
{{"facts": ["fact one", "fact two"]}}
Answer {{"facts": []}} when there is nothing worth remembering."""

CUSTOM_EXTRACTION_SUFFIX = """

Answer with only a JSON object of this exact shape, no other keys and no prose:
{"facts": ["fact one", "fact two"]}"""

# When the conversation happened, if the caller said (add's `timestamp`).
OBSERVED = "\nThe conversation took place on {observed}: date the facts from it accordingly."

# The caller's rules (mem0's custom_instructions), after memvault's own.
INSTRUCTIONS = """

Custom instructions (they take precedence over the guidance above, not over the answer format):
{instructions}"""

# The rules for each event; a custom update prompt (mem0's custom_update_memory_prompt)
# replaces this part only, so the answer format and the numbered ids stay memvault's.
RECONCILE_RULES = """You maintain a long-term memory. Compare newly learned facts with the \
existing memories below and decide, for each, one event:
- ADD: a new fact not covered by any existing memory (use "id": null).
- UPDATE: a fact that refines or corrects an existing memory; give that memory's id and the \
merged new text, and its previous text in "old_memory".
- DELETE: an existing memory that a new fact contradicts and that should be forgotten; give its id.
- NONE: an existing memory that stays as it is; give its id."""

RECONCILE = """{rules}

Existing memories (id: text):
{existing}

New facts:
{facts}

Answer with only a JSON object of this exact shape, no other keys and no prose:
{{"memory": [{{"id": "0", "text": "...", "event": "UPDATE", "old_memory": "..."}},
             {{"id": null, "text": "...", "event": "ADD"}}]}}
Use only the ids listed above for UPDATE, DELETE and NONE, at most one event per id."""

RETRY = """Your answer could not be used: {error}
Reply again with only the JSON object described above."""


def reconcile_prompt(existing: dict[str, str], facts: list[str],
                     rules: str | None = None) -> str:
    listing = "\n".join(f"{key}: {json.dumps(text, ensure_ascii=False)}"
                        for key, text in existing.items())
    return RECONCILE.format(rules=rules or RECONCILE_RULES, existing=listing or "(none)",
                            facts="\n".join(f"- {fact}" for fact in facts))


def extraction_prompt(today: str, prompt: str | None = None, *, instructions: str | None = None,
                      observed: str | None = None) -> str:
    """The system prompt of the extraction step: memvault's (or the caller's replacement,
    with the answer format appended), the conversation's date, the caller's instructions."""
    system = prompt + CUSTOM_EXTRACTION_SUFFIX if prompt else FACT_EXTRACTION.format(today=today)
    if observed:
        system += OBSERVED.format(observed=observed)
    if instructions:
        system += INSTRUCTIONS.format(instructions=instructions)
    return system
