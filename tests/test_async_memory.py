"""`AsyncMemory`: mem0's asyncio API, the same methods as `Memory`, awaited, off the event loop;
on both backends."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from memvault.errors import InvalidInput, NotFound
from memvault.memory import Memory


def test_every_mem0_async_method_is_there(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("MEM0_TELEMETRY", "False")
    monkeypatch.setenv("MEM0_DIR", str(tmp_path / "mem0"))
    from mem0 import AsyncMemory as Mem0AsyncMemory

    from memvault import AsyncMemory

    for name in ("add", "get", "get_all", "search", "update", "delete", "delete_all",
                 "history", "reset"):
        assert inspect.iscoroutinefunction(getattr(Mem0AsyncMemory, name)), name
        assert inspect.iscoroutinefunction(getattr(AsyncMemory, name)), name
    assert callable(AsyncMemory.from_config)


def test_async_round_trip(memory: Memory) -> None:
    from memvault import AsyncMemory

    async def scenario() -> None:
        amem = AsyncMemory(memory=memory)
        added = await amem.add("I like green tea", user_id="alice", infer=False)
        memory_id = added["results"][0]["id"]
        await amem.add([{"role": "user", "content": "I live in Lisbon"}], user_id="bob",
                       infer=False)
        found = await amem.search("tea", filters={"user_id": "alice"})
        assert found["results"][0]["id"] == memory_id
        got = await amem.get(memory_id)
        assert got is not None and got["memory"] == "I like green tea"
        assert len((await amem.get_all(filters={"user_id": "alice"}))["results"]) == 1
        await amem.update(memory_id, text="I like black tea")
        assert [h["event"] for h in await amem.history(memory_id)] == ["ADD", "UPDATE"]
        assert {e["id"] for e in await amem.entities()} == {"alice", "bob"}
        await amem.delete(memory_id)
        assert await amem.get(memory_id) is None
        with pytest.raises(NotFound):
            await amem.delete(memory_id)  # the same errors as Memory
        with pytest.raises(InvalidInput):
            await amem.search("tea")  # still scoped
        await amem.delete_all(user_id="bob")
        assert (await amem.get_all(filters={"user_id": "bob"}))["results"] == []

    asyncio.run(scenario())


def test_calls_run_off_the_event_loop(memory: Memory) -> None:
    from memvault import AsyncMemory

    async def scenario() -> int:
        amem = AsyncMemory(memory=memory)
        ticks = 0
        stop = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0)
        before = ticks
        messages = [{"role": "user", "content": f"fact number {i} about tea"}
                    for i in range(200)]
        added, _ = await asyncio.gather(amem.add(messages, user_id="c", infer=False),
                                        amem.search("tea", filters={"user_id": "c"}))
        during = ticks - before
        stop.set()
        await beat
        assert len(added["results"]) == 200
        return during

    # 200 texts take the embedder a few hundred milliseconds: a loop blocked by them would
    # not tick meanwhile
    assert asyncio.run(scenario()) >= 5
