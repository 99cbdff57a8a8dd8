"""Fact extraction with an LLM over any OpenAI-compatible chat-completions endpoint."""

from memvault.llm.client import ChatClient, make_llm
from memvault.llm.extraction import infer_memories

__all__ = ["ChatClient", "infer_memories", "make_llm"]
