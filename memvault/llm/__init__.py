"""Fact extraction with an LLM over any OpenAI-compatible chat-completions endpoint: facts and
decisions come back; applying them is the Memory service's (memory/infer.py)."""

from memvault.llm.client import ChatClient, make_llm
from memvault.llm.extraction import Decision, decide, extract_facts

__all__ = ["ChatClient", "Decision", "decide", "extract_facts", "make_llm"]
