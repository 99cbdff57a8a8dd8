"""Validating a backup reads its memories as a stream: the same faults, named by the same
line, while holding only the memories' ids (a backup of a million memories is validated
beside a running server)."""

from __future__ import annotations

import tracemalloc
import uuid
from typing import Any

import pytest

from memvault.backup import create_backup, list_backups, open_destinations
from memvault.backup.errors import BackupCorrupt
from memvault.backup.format import check_snapshot, iter_memories, parse_memories, read_snapshot
from memvault.backup.jsonlines import dumps
from memvault.config import Settings
from memvault.memory import Memory, text_hash
from memvault.store import MemoryRecord, utc_now


def lines(n: int) -> bytes:
    return b"".join(dumps({"id": f"m{i}", "memory": f"fact {i} " + "x" * (i % 50),
                           "user_id": f"u{i % 3}"}) + b"\n" for i in range(n))


def chunked(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_streamed_rows_are_the_whole_files_rows(chunk: int) -> None:
    raw = lines(3_000)
    streamed = [row for batch in iter_memories(chunked(raw, chunk), batch_bytes=5_000)
                for row in batch]
    assert streamed == parse_memories(raw)
    assert [row for batch in iter_memories(chunked(raw[:-1], 97), 5_000) for row in batch] \
        == parse_memories(raw)  # no final newline: the last line still counts


@pytest.mark.parametrize("fault", [b"{not json", b'{"id": 5, "memory": "x"}', b"", b"[]"])
def test_a_bad_line_deep_in_the_file_is_named_by_its_number(fault: bytes) -> None:
    good = lines(3_000).split(b"\n")[:-1]
    good[2_345] = fault
    raw = b"\n".join(good) + b"\n"
    with pytest.raises(BackupCorrupt) as whole:
        parse_memories(raw)
    with pytest.raises(BackupCorrupt) as streamed:
        for _ in iter_memories(chunked(raw, 333), batch_bytes=4_000):
            pass
    assert "line 2346 " in str(whole.value) + " "
    assert str(streamed.value) == str(whole.value)


def test_validation_holds_ids_not_rows(memory: Memory, settings: Settings) -> None:
    now = utc_now()
    memory.store.bulk_load([
        MemoryRecord(id=str(uuid.uuid4()), memory=f"memory {i} " + "word " * 40,
                     hash=text_hash(f"memory {i}"), created_at=now, updated_at=now,
                     user_id=f"u{i % 5}", metadata={"n": i, "tags": ["a", "b"]})
        for i in range(20_000)], {})
    result = create_backup(memory.store, settings)[0]
    assert result.status == "valid", result.reasons
    dest = open_destinations(settings)[0]
    entry = next(e for e in list_backups(dest) if e.id == result.id)
    assert entry.manifest is not None

    def peak(read: Any, **options: Any) -> int:
        tracemalloc.start()
        try:
            read(dest, entry.manifest, None, folder=entry.folder, **options)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    summary = check_snapshot(dest, entry.manifest, None, folder=entry.folder)
    assert sum(summary.counts.values()) == 20_000 and len(summary.ids) == 20_000
    assert summary.counts == entry.manifest.counts
    # batches of 256 KB here (4 MB by default): what it holds follows the batch, not the file
    whole, streamed = peak(read_snapshot), peak(check_snapshot, batch_bytes=1 << 18)
    assert streamed < whole / 4, (streamed, whole)
