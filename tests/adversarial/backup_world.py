"""A small store with two snapshots, several journal segments, its lineage head and the
destination marker, and the mutations an attacker (or a bad disk) applies to its files.

Shared by tests/adversarial/test_backup_fuzz.py (sampled) and bench/bench_fuzz.py (--full).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memvault.backup import JournalShipper, create_backup, list_backups, run_restore
from memvault.backup.crypto import Cipher, cipher_for
from memvault.backup.destinations import LocalDestination
from memvault.backup.head import read_head
from memvault.backup.journal import list_segments
from memvault.backup.verify import VerifyReport, verify_backups
from memvault.config import Settings, load_settings
from memvault.errors import MemvaultError
from memvault.memory import Memory
from memvault.store import open_store
from tests.helpers import record

KEY = "a long random secret for the fuzz tests"


@dataclass
class World:
    """A pristine destination and what the store acknowledged (its final state)."""

    root: Path  # the pristine destination
    settings: Settings
    encrypted: bool
    lineage_id: str
    memories: dict[str, dict[str, Any]]  # id -> record as a dict
    vectors: dict[str, bytes]  # id -> float32 bytes under the active embedder
    files: dict[str, str] = field(default_factory=dict)  # role -> key in the destination
    segments: list[tuple[int, int]] = field(default_factory=list)  # (after, upto) in order

    @property
    def cipher(self) -> Cipher | None:
        return cipher_for(KEY if self.encrypted else None)


def _settings(base: Path, encrypted: bool) -> Settings:
    values: dict[str, Any] = {"data_dir": base / "data",
                              "database_url": f"sqlite:///{base / 'source.db'}"}
    if encrypted:
        values["backup_encryption_key"] = KEY
    return load_settings(values)


def legacy_write(memory: Memory, text: str, metadata: dict[str, Any]) -> None:
    """A memory with metadata the API now refuses (integers beyond 64 bits), written through
    the store as an older memvault did: a backup must hold what the store holds."""
    store = memory.store
    active = store.meta().active_embedder
    assert active is not None
    store.add([record(text, user_id="legacy", metadata=metadata)],
              memory.embedder.embed([text]), active, "test")


def build(base: Path, embedder: Any, encrypted: bool = False) -> World:
    settings = _settings(base, encrypted)
    with Memory(settings, embedder=embedder) as memory:
        shipper = JournalShipper(memory.store, settings)

        def say(text: str, user: str, **extra: Any) -> None:
            memory.add(text, user_id=user, infer=False, **extra)

        say("alice likes green tea", "alice", metadata={"f": 0.1, "deep": {"a": [1]}})
        legacy_write(memory, "a store written before the API refused huge integers",
                     {"n": 2**70, "neg": -(2**80)})
        say("bob plays the cello", "bob")
        say("🦊 astral fox, ünïcode", "alice/agent:x")
        assert create_backup(memory.store, settings)[0].status == "valid"
        say("first shipped", "alice")
        assert shipper.ship() == 1
        ids = [r["id"] for r in memory.get_all(user_id="alice", top_k=100)["results"]]
        memory.update(ids[0], "alice moved to Porto")
        memory.delete(ids[1])
        assert shipper.ship() == 1
        assert create_backup(memory.store, settings)[0].status == "valid"
        say("after the second snapshot", "bob")
        assert shipper.ship() == 1
        say("the newest write", "carol")
        legacy_write(memory, "shipped with a huge integer", {"big": 2**64})
        assert shipper.ship() == 1
        shipper.stop()  # a clean stop writes the head: journal_upto and the newest sha256
        store = memory.store
        lineage = store.meta().lineage_id
        active = store.meta().active_embedder
        records = {r.id: r.to_dict() for r in store.list(None)}
        vectors: dict[str, bytes] = {}
        with store.snapshot() as snap:
            for vid, matrix in snap.iter_vectors(active, 1000):
                for mid, row in zip(vid, matrix, strict=True):
                    vectors[mid] = np.asarray(row, dtype="<f4").tobytes()
    root = Path(settings.backup_urls[0])
    head = read_head(LocalDestination(root), lineage)
    assert head is not None and head.journal_tip_sha256 and head.stopped, head
    world = World(root, settings, encrypted, lineage, records, vectors)
    dest = LocalDestination(root)

    for index, entry in enumerate(sorted(list_backups(dest), key=lambda e: e.seq)):
        for key in entry.keys:
            world.files[f"snapshot{index}/{key.rsplit('/', 1)[-1]}"] = key
    for index, ref in enumerate(list_segments(dest, lineage)):
        world.files[f"segment{index}"] = ref.key
        world.segments.append((ref.after_seq, ref.upto_seq))
    world.files["head"] = f"lineages/{lineage}/head.json"
    world.files["marker"] = "memvault-destination.json"
    return world


ROLES = ["snapshot0/manifest.json", "snapshot0/memories.jsonl.zst",
         "snapshot0/vectors-0.f32.zst", "snapshot0/vectors-0.ids.zst",
         "snapshot1/manifest.json", "snapshot1/memories.jsonl.zst",
         "snapshot1/vectors-0.f32.zst", "snapshot1/vectors-0.ids.zst",
         "segment0", "segment1", "segment2", "segment3", "head", "marker"]


def copy(world: World, into: Path) -> Path:
    target = into / f"dest-{uuid.uuid4().hex[:8]}"
    shutil.copytree(world.root, target)
    return target


def flip(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 1 << bit
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@dataclass
class Outcome:
    verify: VerifyReport
    restored: bool  # every acknowledged memory came back byte-exact
    refusal: str | None  # the restore's error message when it refused


def verify(world: World, dest_root: Path) -> VerifyReport:
    return verify_backups([LocalDestination(dest_root)], world.cipher, every=True,
                          read_data=True)


def restore(world: World, dest_root: Path, scratch: Path, embedder: Any, **options: Any
            ) -> Outcome | str | None:
    """None when the restore returned exactly what the store acknowledged; the refusal
    message when it raised; a description of the difference when it lost data silently."""
    target_settings = world.settings.model_copy(update={
        "database_url": f"sqlite:///{scratch / f'target-{uuid.uuid4().hex[:8]}.db'}"})
    target = open_store(target_settings)
    try:
        try:
            run_restore(target, target_settings, embedder,
                        destinations=[LocalDestination(dest_root)], **options)
        except MemvaultError as exc:
            return f"REFUSED: {exc.message}"
        return difference(world, target)
    finally:
        target.close()


def exact(value: Any) -> str:
    """A value as text that tells 2**70 from 2.0**70 and 1 from 1.0 (== does not)."""
    return json.dumps(value, sort_keys=True)


def difference(world: World, target: Any) -> str | None:
    got = {r.id: r.to_dict() for r in target.list(None)}
    if exact(got) != exact(world.memories):
        missing = sorted(set(world.memories) - set(got))
        extra = sorted(set(got) - set(world.memories))
        changed = sorted(k for k in set(got) & set(world.memories)
                         if exact(got[k]) != exact(world.memories[k]))
        return f"SILENT LOSS: missing {missing}, extra {extra}, changed {changed}"
    active = target.meta().active_embedder
    with target.snapshot() as snap:
        for ids, matrix in snap.iter_vectors(active, 1000):
            for mid, row in zip(ids, matrix, strict=True):
                if np.asarray(row, dtype="<f4").tobytes() != world.vectors.get(mid):
                    return f"SILENT LOSS: the vector of {mid} differs"
    return None


def mutations(world: World, offsets: list[tuple[int, int]], cuts: list[float]
              ) -> Iterator[tuple[str, str, Any]]:
    """(role, description, apply(dest_root)) for every role: bit flips at `offsets`
    ((position, bit); position is taken modulo the size), truncations at `cuts` (fractions of
    the size), deletion."""
    for role in ROLES:
        key = world.files[role]
        for position, bit in offsets:
            yield role, f"flip bit {bit} at {position}", (
                lambda root, k=key, p=position, b=bit: flip(root / k, p, b))
        for cut in cuts:
            yield role, f"truncate at {cut:.2f}", (
                lambda root, k=key, c=cut: truncate(root / k, int((root / k).stat().st_size * c)))
        yield role, "delete", (lambda root, k=key: (root / k).unlink())
