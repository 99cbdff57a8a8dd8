"""memvault: long-term memory for AI agents that cannot silently lose what it remembers."""

from __future__ import annotations

from typing import Any

from memvault.version import __version__

__all__ = ["AsyncMemory", "Memory", "MemoryClient", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import memvault` stays cheap for the CLI's cold start.
    if name == "Memory":
        from memvault.memory import Memory

        return Memory
    if name == "AsyncMemory":
        from memvault.memory.async_memory import AsyncMemory

        return AsyncMemory
    if name == "MemoryClient":
        from memvault.client import MemoryClient

        return MemoryClient
    raise AttributeError(name)
