"""`AsyncMemory`: mem0's asyncio API. The same methods as `Memory`, awaited; each runs the
`Memory` method in a worker thread (`asyncio.to_thread`), so a store, embedder or LLM call never
blocks the event loop, and every rule of `Memory` (validation, journal, scope) holds unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

from memvault.memory.service import Memory


class AsyncMemory:
    """`await memory.add(...)`, `await memory.search(...)`, ... as mem0's `AsyncMemory`.
    Thread-safe like `Memory`: concurrent awaits run side by side in the default executor."""

    def __init__(self, *args: Any, memory: Memory | None = None, **kwargs: Any) -> None:
        """Takes `Memory`'s arguments, or an open `Memory` to wrap (`memory=`)."""
        self.sync = memory if memory is not None else Memory(*args, **kwargs)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None = None) -> AsyncMemory:
        """As `Memory.from_config` (memvault's keys or mem0's nested config dict)."""
        return cls(memory=Memory.from_config(config))

    @property
    def settings(self) -> Any:
        return self.sync.settings

    async def add(self, messages: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.add, messages, **kwargs)

    async def get(self, memory_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.sync.get, memory_id)

    async def get_all(self, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.get_all, **kwargs)

    async def search(self, query: str, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.search, query, **kwargs)

    async def update(self, memory_id: str, *args: Any, **kwargs: Any) -> dict[str, str]:
        return await asyncio.to_thread(self.sync.update, memory_id, *args, **kwargs)

    async def delete(self, memory_id: str, **kwargs: Any) -> dict[str, str]:
        return await asyncio.to_thread(self.sync.delete, memory_id, **kwargs)

    async def delete_all(self, *args: Any, **kwargs: Any) -> dict[str, str]:
        return await asyncio.to_thread(self.sync.delete_all, *args, **kwargs)

    async def history(self, memory_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.history, memory_id)

    async def reset(self, **kwargs: Any) -> None:
        await asyncio.to_thread(self.sync.reset, **kwargs)

    async def entities(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.entities)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
