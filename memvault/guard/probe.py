"""An HTTP embedder asked its probe texts again while the server runs: a model swapped behind
the same name would otherwise poison every vector written from then on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from memvault.embed import PROBE_MIN_SIMILARITY, PROBE_TEXTS, EmbedderIdentity
from memvault.guard.alerts import Alert
from memvault.guard.checks import Finding, Observation

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.memory import Memory

log = logging.getLogger("memvault.guard")


class EmbedderProbe:
    def __init__(self, settings: Settings, memory: Memory, probe_seconds: float,
                 now: float) -> None:
        self.settings = settings
        self.memory = memory
        self.probe_seconds = probe_seconds
        self._probed_at = now  # the startup check has just probed it
        self._drift: Finding | None = None

    def drift(self, obs: Observation, now: float) -> Finding | None:
        """Ask an HTTP embedder its probe texts again: a model swapped behind the same name
        while the server runs would otherwise poison every vector written from then on. The
        bundled model is pinned by sha256 and not asked. Returns the EmbedderMismatch finding
        while the answers differ (the Memory then refuses writes and searches)."""
        if self.settings.embedder == "local" or not obs.active_embedder:
            return None
        if now - self._probed_at < self.probe_seconds:
            return self._drift
        self._probed_at = now
        stored = self.memory.store.embedders().get(obs.active_embedder)
        if stored is None or stored.key != obs.active_embedder:
            return None
        try:
            answers = self.memory.embedder.embed(list(PROBE_TEXTS))
        except Exception as exc:  # down is not drift: requests report that themselves
            log.warning("embedder probe skipped: %s: %s", type(exc).__name__, exc)
            return self._drift
        fresh = EmbedderIdentity(stored.provider, stored.model, int(answers.shape[1]), answers)
        similarity = stored.probe_similarity(fresh)
        if similarity >= PROBE_MIN_SIMILARITY:
            if self._drift is not None:
                log.warning("the embedder answers its probe texts as before again")
            self._drift = None
            return None
        message = (f"the model behind {obs.active_embedder} now answers the probe texts "
                   f"differently from the one that made the store's vectors (similarity "
                   f"{similarity:.3f} < {PROBE_MIN_SIMILARITY}); writes and searches are "
                   "refused so that no vector of another model gets in")
        self._drift = Finding(Alert.EmbedderMismatch, True, message, {
            "hint": "restore the original model behind that name (e.g. pin the Ollama tag), "
            "or re-embed with `memvault reembed --embedder SPEC`"})
        return self._drift
