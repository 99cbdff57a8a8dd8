"""The memory service (mem0's Python API) and its input checks."""

from memvault.memory.async_memory import AsyncMemory
from memvault.memory.service import Memory, text_hash
from memvault.memory.shapes import format_history, format_record

__all__ = ["AsyncMemory", "Memory", "format_history", "format_record", "text_hash"]
