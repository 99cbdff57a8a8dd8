"""Hooks for other concerns (backups, guard) to plug into the server without editing it.

A module listed in EXTENSION_MODULES that exists may define any of:
- `router`: an APIRouter mounted behind the admin key (e.g. `GET|POST /backups`);
- `public_router`: an APIRouter mounted without auth;
- `install(app)`: called once with the app (e.g. to append to `app.state.readiness_checks`
  or register collectors on `app.state.metrics_registry`);
- `background_jobs(settings, memory) -> list[BackgroundJob]`: started by `memvault serve`
  when the app starts and stopped when it shuts down.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.memory import Memory

log = logging.getLogger("memvault.server")

EXTENSION_MODULES = ("memvault.backup.api", "memvault.guard.api")


class BackgroundJob(Protocol):
    """Something that runs beside the API (a scheduler, a watchdog)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def load_extensions(names: Iterable[str] | None = None) -> list[ModuleType]:
    modules = []
    for name in EXTENSION_MODULES if names is None else names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its package does not exist
            found = False
        if found:
            modules.append(importlib.import_module(name))
    return modules


def background_jobs(settings: Settings, memory: Memory) -> list[BackgroundJob]:
    jobs: list[BackgroundJob] = []
    for module in load_extensions():
        factory = getattr(module, "background_jobs", None)
        if factory is not None:
            jobs.extend(factory(settings, memory))
    return jobs
