"""Guarding a running mem0 in place: `memvault watch mem0` (Watcher) and `memvault restore
--to-mem0` (restore_to_mem0). See docs/guard-mem0.md."""

from memvault.watch.to_mem0 import Mem0Restore, restore_to_mem0
from memvault.watch.watcher import Watcher, mirror_path

__all__ = ["Mem0Restore", "Watcher", "mirror_path", "restore_to_mem0"]
