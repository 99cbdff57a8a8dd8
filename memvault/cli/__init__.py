"""The command line: `memvault ...`."""

from memvault.cli.app import app, main

__all__ = ["app", "main"]
