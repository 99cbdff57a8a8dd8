"""Safety snapshot cost: what a destructive operation pays for its way back.

Run: .venv/bin/python -m bench.bench_safety [--size 100000]

A SQLite store of `--size` memories (real-text corpus, 384-dim unit vectors) is filled once.
Measured: the safety snapshot alone (`SafetySnapshots.before`, i.e. `create_backup` with full
read-back validation and the journal shipped first), best of 2; then `Memory.reset()` with its
safety snapshot, against the reset alone (every memory deleted through the journal) as the
baseline.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.bench_backup import build_rows, fill
from bench.common import report, show, timer
from memvault.backup.safety import Operation, SafetySnapshots
from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    args = parser.parse_args()
    embedder = LocalEmbedder()
    rows = build_rows(args.size)
    with tempfile.TemporaryDirectory(prefix="bench-safety-") as tmp:
        work = Path(tmp)
        settings = load_settings({"data_dir": work, "database_url":
                                  f"sqlite:///{work / 'store.db'}"})
        with Memory(settings, embedder=embedder) as memory:
            fill(memory.store, *rows, embedder)
            safety = SafetySnapshots(memory.store, settings)
            alone = float("inf")
            for _ in range(2):
                with timer() as t:
                    taken = safety.before(Operation.RESET)
                assert taken is not None and taken.memories == args.size
                alone = min(alone, t["seconds"])
            with timer() as with_snapshot:
                memory.reset()
            fill(memory.store, *rows, embedder)
            with timer() as bare:
                memory.reset(safety_snapshot=False)
    results = {"size": args.size, "snapshot_s": alone,
               "reset_with_snapshot_s": with_snapshot["seconds"],
               "reset_alone_s": bare["seconds"]}
    show([("figure", "value", "baseline", "ratio"),
          ("safety snapshot (validated)", f"{alone:.2f} s", "", ""),
          ("reset with safety snapshot", f"{with_snapshot['seconds']:.2f} s",
           f"reset alone {bare['seconds']:.2f} s",
           f"{with_snapshot['seconds'] / bare['seconds']:.2f}x")])
    print(report("safety", results))


if __name__ == "__main__":
    main()
