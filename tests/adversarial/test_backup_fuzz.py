"""Backup fuzzing: every file of a destination (manifests, memories, vectors, ids, each journal
segment, the lineage head, the destination marker) flipped bit by bit at hypothesis-chosen
offsets, truncated, deleted; segments reordered and duplicated. After each mutation `backup
verify --read-data` must fail naming the file, and restore must either return every
acknowledged memory byte-exact (ids, text, metadata, vectors) or refuse naming the loss.

The seed is printed (set MEMVAULT_FUZZ_SEED to replay it); `bench/bench_fuzz.py --full` tries
every offset.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from memvault.backup.verify import VerifyReport
from memvault.cli import app
from memvault.embed.local import LocalEmbedder
from tests.adversarial import backup_world as bw

SEED = int(os.environ.get("MEMVAULT_FUZZ_SEED") or random.randrange(2**32))
print(f"backup fuzz seed: MEMVAULT_FUZZ_SEED={SEED}")
CUTS = [0.0, 0.5, 0.97]
FUZZ = settings(max_examples=3, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=["plain", "encrypted"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          local_embedder: LocalEmbedder) -> bw.World:
    base = tmp_path_factory.mktemp(f"world-{request.param}")
    built = bw.build(base, local_embedder, encrypted=request.param == "encrypted")
    assert bw.verify(built, built.root).ok
    return built


def names_it(report: VerifyReport, world: bw.World, role: str, deleted: bool) -> bool:
    """Some fault names the file (or, for a deleted segment, the seqs it held)."""
    key = world.files[role]
    name = key.rsplit("/", 1)[-1]
    texts = [f"{f.file or ''} {f.fault}" for f in report.faults]
    if any(name in text for text in texts):
        return True
    if deleted and role.startswith("segment"):
        after, upto = world.segments[int(role.removeprefix("segment"))]
        return any(f"{after + 1}..{upto}" in text for text in texts)
    return False


def check(world: bw.World, root: Path, scratch: Path, embedder: Any, role: str, what: str
          ) -> None:
    report = bw.verify(world, root)
    assert not report.ok, f"{role} {what}: verify --read-data passed (seed {SEED})"
    assert names_it(report, world, role, what == "delete"), (
        f"{role} {what}: no fault names {world.files[role]}: {report.faults} (seed {SEED})")
    outcome = bw.restore(world, root, scratch, embedder)
    assert outcome is None or outcome.startswith("REFUSED"), (
        f"{role} {what}: {outcome} (seed {SEED})")
    if outcome is not None:
        assert any(word in outcome for word in ("lost", "damaged", "no usable", "not hold")), (
            f"{role} {what}: the refusal does not name the loss: {outcome}")


@pytest.mark.parametrize("role", bw.ROLES)
def test_flipped_bits_are_caught(world: bw.World, role: str, tmp_path: Path,
                                 local_embedder: LocalEmbedder) -> None:
    @seed(SEED)
    @FUZZ
    @given(position=st.integers(min_value=0, max_value=2**31), bit=st.integers(0, 7))
    def flipped(position: int, bit: int) -> None:
        root = bw.copy(world, tmp_path)
        try:
            bw.flip(root / world.files[role], position, bit)
            check(world, root, tmp_path, local_embedder, role, f"flip bit {bit} at {position}")
        finally:
            shutil.rmtree(root)

    flipped()


@pytest.mark.parametrize("role", bw.ROLES)
def test_truncated_and_deleted_files_are_caught(world: bw.World, role: str, tmp_path: Path,
                                                local_embedder: LocalEmbedder) -> None:
    for cut in CUTS:
        root = bw.copy(world, tmp_path)
        path = root / world.files[role]
        bw.truncate(path, int(path.stat().st_size * cut))
        check(world, root, tmp_path, local_embedder, role, f"truncate at {cut}")
    root = bw.copy(world, tmp_path)
    (root / world.files[role]).unlink()
    check(world, root, tmp_path, local_embedder, role, "delete")


def test_reordered_segments_are_caught(world: bw.World, tmp_path: Path,
                                       local_embedder: LocalEmbedder) -> None:
    root = bw.copy(world, tmp_path)
    one, two = root / world.files["segment1"], root / world.files["segment2"]
    first, second = one.read_bytes(), two.read_bytes()
    one.write_bytes(second)
    two.write_bytes(first)
    check(world, root, tmp_path, local_embedder, "segment2", "swapped with segment1")
    check(world, root, tmp_path, local_embedder, "segment1", "swapped with segment2")


def test_duplicated_segment_is_reported_and_restore_is_exact(
        world: bw.World, tmp_path: Path, local_embedder: LocalEmbedder) -> None:
    root = bw.copy(world, tmp_path)
    key = world.files["segment1"]
    legacy = root / "journal" / world.lineage_id / key.rsplit("/", 1)[-1]
    legacy.parent.mkdir(parents=True)
    shutil.copy(root / key, legacy)
    report = bw.verify(world, root)
    assert any("duplicate" in f.fault and legacy.name in (f.file or "") for f in report.faults)
    assert bw.restore(world, root, tmp_path, local_embedder) is None


def test_a_gap_refuses_restore_unless_loss_is_allowed(world: bw.World, tmp_path: Path,
                                                      local_embedder: LocalEmbedder) -> None:
    root = bw.copy(world, tmp_path)
    (root / world.files["segment2"]).unlink()
    after = world.segments[2][0]
    refused = bw.restore(world, root, tmp_path, local_embedder)
    assert refused is not None and f"seqs {after + 1}..{world.segments[-1][1]} are lost" \
        in refused, refused
    allowed = bw.restore(world, root, tmp_path, local_embedder, allow_loss=True)
    assert allowed is not None and allowed.startswith("SILENT LOSS: missing")  # as printed


def test_the_cli_names_the_file_and_exits_non_zero(world: bw.World, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = bw.copy(world, tmp_path)
    monkeypatch.setenv("MEMVAULT_BACKUP_URLS", str(root))
    monkeypatch.setenv("MEMVAULT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEMVAULT_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    if world.encrypted:
        monkeypatch.setenv("MEMVAULT_BACKUP_ENCRYPTION_KEY", bw.KEY)
    cli = CliRunner()
    assert cli.invoke(app, ["backup", "verify", "--all", "--read-data"]).exit_code == 0
    newest = root / world.files["segment3"]
    bw.flip(newest, newest.stat().st_size // 2, 3)
    verified = cli.invoke(app, ["backup", "verify", "--read-data"])
    assert verified.exit_code == 1 and newest.name in verified.output, verified.output
    restored = cli.invoke(app, ["restore", "--dry-run"])
    assert restored.exit_code == 1 and "lost" in restored.output, restored.output
    restored = cli.invoke(app, ["restore"])
    assert restored.exit_code == 1 and "--allow-loss" in restored.output, restored.output
