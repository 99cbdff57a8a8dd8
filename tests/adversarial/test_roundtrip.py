"""Whatever `Memory.add` accepts survives snapshot -> journal -> restore byte-exact, on SQLite
and PostgreSQL: unicode (astral characters, no lone surrogates), separators in ids, floats,
nested metadata, texts and metadata at their size limits, and integers beyond 64 bits that a
store written by an older memvault holds. The seed is printed (MEMVAULT_FUZZ_SEED replays)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from memvault.backup import JournalShipper, create_backup, run_restore
from memvault.config import Settings
from memvault.embed.local import LocalEmbedder
from memvault.errors import InvalidInput
from memvault.memory import Memory
from memvault.memory.validation import MAX_METADATA_BYTES, MAX_TEXT_BYTES
from memvault.store import Store, open_store
from tests.adversarial.backup_world import exact, legacy_write

SEED = int(os.environ.get("MEMVAULT_FUZZ_SEED") or random.randrange(2**32))
print(f"roundtrip seed: MEMVAULT_FUZZ_SEED={SEED}")
PROPERTY = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

_chars = st.characters(exclude_categories=["Cs", "Cc"])  # no lone surrogates, no controls
_texts = st.text(_chars, min_size=1, max_size=80).filter(lambda t: t.strip() != "")
_ids = st.text(st.characters(exclude_categories=["Cs", "Cc"]) | st.sampled_from("/:|\\%"),
               min_size=1, max_size=24).filter(lambda t: t.strip() != "")
_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | _texts)
_metadata = st.dictionaries(
    st.text(_chars, max_size=12),
    st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(_chars, max_size=8), inner, max_size=3),
                 max_leaves=8),
    max_size=5)


@pytest.fixture
def target(backend: str, settings: Settings, tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[tuple[Store, Settings]]:
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        name = "rt_" + uuid.uuid4().hex[:12]
        server.psql(f"CREATE DATABASE {name};")
        target_settings = settings.model_copy(update={"database_url": server.get_uri(name)})
    else:
        target_settings = settings.model_copy(
            update={"database_url": f"sqlite:///{tmp_path / 'target.db'}"})
    store = open_store(target_settings)
    yield store, target_settings
    store.close()
    if backend == "postgres":
        server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


def _add(memory: Memory, text: str, ids: dict[str, str], metadata: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidInput):  # refused (a 400): nothing acknowledged to keep
        memory.add(text, infer=False, metadata=metadata or None, **ids)


def _writes(memory: Memory) -> Any:
    @seed(SEED)
    @PROPERTY
    @given(text=_texts, who=st.sampled_from(["user_id", "agent_id", "run_id"]), name=_ids,
           metadata=_metadata)
    def write(text: str, who: str, name: str, metadata: dict[str, Any]) -> None:
        _add(memory, text, {who: name}, metadata)

    return write


def _at_the_limits(memory: Memory) -> None:
    astral = "🦊"  # 4 bytes in UTF-8
    _add(memory, astral * (MAX_TEXT_BYTES // 4), {"user_id": "limits/🦊"}, {})
    filler = "x" * (MAX_METADATA_BYTES - 200)
    _add(memory, "metadata at its limit", {"user_id": "limits"},
         {"filler": filler, "deep": [[[[{"f": 1e-308, "g": -0.0, "h": 2**64 - 1}]]]]})
    legacy_write(memory, "beyond 64 bits", {"n": 2**64, "m": -(2**63) - 1, "p": 10**40})


def test_whatever_add_accepts_survives_backup_and_restore(
        memory: Memory, settings: Settings, target: tuple[Store, Settings],
        local_embedder: LocalEmbedder) -> None:
    _writes(memory)()
    _at_the_limits(memory)
    assert create_backup(memory.store, settings)[0].status == "valid"
    shipper = JournalShipper(memory.store, settings)
    _writes(memory)()  # these come back through the journal
    legacy_write(memory, "journaled beyond 64 bits", {"n": -(2**100)})
    ids = [r.id for r in memory.store.list(None) if r.user_id != "legacy"][:2]
    memory.update(ids[0], "updated: 🦊 ü \u2028 line separator")
    memory.delete(ids[1])
    assert shipper.ship() >= 1
    store, target_settings = target
    run_restore(store, target_settings, local_embedder)
    want = {r.id: r.to_dict() for r in memory.store.list(None)}
    got = {r.id: r.to_dict() for r in store.list(None)}
    assert set(got) == set(want), f"seed {SEED}"
    for memory_id, record in want.items():
        assert exact(got[memory_id]) == exact(record), f"{memory_id} differs (seed {SEED})"
    assert any(str(2**64) in json.dumps(r["metadata"]) for r in got.values())
