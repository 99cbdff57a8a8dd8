"""The version of memvault, in a module of its own so that any layer can read it without
importing the package root (whose lazy `Memory` and `MemoryClient` sit at the top)."""

__version__ = "0.1.0"
