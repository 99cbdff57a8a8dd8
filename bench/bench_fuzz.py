"""Backup fuzzing bench: the mutations of tests/adversarial/test_backup_fuzz.py, exhaustively.

Run: .venv/bin/python -m bench.bench_fuzz [--full] [--variant plain|encrypted|both]

Without --full: 32 random byte offsets per file (seeded, seed printed). With --full, every
offset class: a flip at every byte of each file's first and last 512 bytes (zstd frame header,
block headers, content checksum; encryption header, chunk lengths, tags; JSON structure) and of
every small file, at every 16th byte in between (the payload); the bit cycles through 0..7 with
the offset. Plus a truncation at every 1/32 of each file and each file deleted, for the plain
and the encrypted destination. Progress is printed per file. For each
mutation `verify --read-data` must fail naming the file, and restore must either return every
acknowledged memory byte-exact or refuse naming the loss. Prints the counts of each outcome and
every violation; exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from memvault.embed.local import LocalEmbedder
from tests.adversarial import backup_world as bw
from tests.adversarial.test_backup_fuzz import names_it

EDGE = 512  # bytes at each end of a file where headers, checksums and tags live


def run(world: bw.World, scratch: Path, embedder: LocalEmbedder, full: bool, rng: random.Random
        ) -> tuple[Counter[str], list[str]]:
    outcomes: Counter[str] = Counter()
    violations: list[str] = []
    for role in bw.ROLES:
        size = (world.root / world.files[role]).stat().st_size
        positions = [o for o in range(size) if o < EDGE or o >= size - EDGE or o % 16 == 0]
        offsets = [(o, o % 8) for o in positions] if full else [
            (rng.randrange(size), rng.randrange(8)) for _ in range(32)]
        before = sum(outcomes.values())
        cuts = [i / 32 for i in range(32)] if full else [0.0, 0.5, 0.97]
        for _, what, apply in bw.mutations(world, offsets, cuts):
            if not what or _ != role:
                continue
            root = bw.copy(world, scratch)
            try:
                apply(root)
                report = bw.verify(world, root)
                if report.ok:
                    violations.append(f"{role} {what}: verify passed")
                elif not names_it(report, world, role, what == "delete"):
                    violations.append(f"{role} {what}: no fault names the file")
                outcome = bw.restore(world, root, scratch, embedder)
                kind = "exact" if outcome is None else outcome.split(":", 1)[0]
                outcomes[kind] += 1
                if kind == "SILENT LOSS":
                    violations.append(f"{role} {what}: {outcome}")
            finally:
                shutil.rmtree(root)
        print(f"  {role}: {sum(outcomes.values()) - before} mutations", flush=True)
    return outcomes, violations


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="every byte offset of every file")
    parser.add_argument("--variant", choices=["plain", "encrypted", "both"], default="both")
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    args = parser.parse_args()
    print(f"seed {args.seed}{' (full)' if args.full else ''}")
    embedder = LocalEmbedder()
    failed = False
    variants = ["plain", "encrypted"] if args.variant == "both" else [args.variant]
    for variant in variants:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            world = bw.build(base, embedder, encrypted=variant == "encrypted")
            started = time.perf_counter()
            outcomes, violations = run(world, base, embedder, args.full,
                                       random.Random(args.seed))
            elapsed = time.perf_counter() - started
            total = sum(outcomes.values())
            print(f"{variant}: {total} mutations in {elapsed:.1f}s "
                  f"({', '.join(f'{k}={v}' for k, v in sorted(outcomes.items()))})")
            for violation in violations:
                print(f"  VIOLATION {violation}")
            failed = failed or bool(violations)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
