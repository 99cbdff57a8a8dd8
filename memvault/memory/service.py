"""The memory service: mem0's Python `Memory` API over a Store and an Embedder."""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from memvault.config import Settings, load_settings
from memvault.embed import Embedder, EmbedderIdentity, make_embedder
from memvault.errors import EmbedderMismatch, InvalidInput, NotFound, StoreError
from memvault.memory import mem0_config, temporal
from memvault.memory import validation as check
from memvault.memory.fusion import CANDIDATES, Scored, SearchMode, single
from memvault.memory.hybrid import hybrid_ranking
from memvault.memory.shapes import format_history, format_record
from memvault.store import MemoryRecord, Store, open_store, parse_filters, text_hash, utc_now
from memvault.store.filters import Bool, Cond, Node, entity_constraints
from memvault.store.records import ENTITY_KEYS, JournalEntry, MetaKey

if TYPE_CHECKING:
    from memvault.backup.safety import SafetySnapshots

log = logging.getLogger("memvault.memory")

_UNSET: Any = object()

# Shown when the configured embedder is not the store's active one and the store does not hold a
# vector from it for every memory. `{spec}` is the configured MEMVAULT_EMBEDDER.
REEMBED_HINT = (
    "set MEMVAULT_EMBEDDER back to the store's embedder, or move the store to the new model "
    "online: `memvault reembed --embedder {spec}` (the store keeps serving meanwhile and switches "
    "when every memory has a vector from it; old vectors are kept); offline alternative: "
    "`memvault backup create`, then `memvault restore latest --yes` with the new "
    "MEMVAULT_EMBEDDER (restore re-embeds every memory from its text)"
)


class Memory:
    """mem0-compatible memory API. Thread-safe; one instance per store is enough."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        embedder: Embedder | None = None,
        actor: str = "python",
        llm: Any | None = None,
        safety: SafetySnapshots | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.store = store or open_store(self.settings)
        self._embedder = embedder
        self._identity: EmbedderIdentity | None = None
        # Why every write and search is refused (see `refuse_embedder`), or None.
        self._embedder_drift: str | None = None
        self._embedder_lock = threading.Lock()
        self.actor = actor
        self._llm = llm  # memvault.llm.ChatClient, built on first infer when MEMVAULT_LLM is set
        # Asked before reset and a delete_all wider than one namespace (backup/safety.py);
        # built on first use unless handed one (the server's goes through its scheduler).
        self._safety = safety
        self._safety_lock = threading.Lock()
        # Runs a hybrid search's keyword query while the query is embedded (both release
        # the GIL); started on first use.
        self._keyword_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # infer=True without an LLM is warned about once per instance (`extraction_skipped`).
        self._warned_no_llm = False

    @classmethod
    def from_config(cls, config: dict[str, Any] | None = None) -> Memory:
        """Accepts memvault's own keys (as in memvault.toml) and mem0's nested config shape."""
        config = config or {}
        dims = mem0_config.expected_dims(config)
        collection = mem0_config.collection_name(config)
        memory = cls(load_settings(mem0_config.translate(config)))
        try:
            if dims is not None:
                identity = memory.embedder.identity()
                mem0_config.check_dims(dims, identity.key, identity.dims)
            if collection is not None:
                mem0_config.check_collection(memory.store, collection)
        except BaseException:
            memory.close()
            raise
        return memory

    def close(self) -> None:
        with self._pool_lock:
            if self._keyword_pool is not None:
                self._keyword_pool.shutdown(wait=True)
                self._keyword_pool = None
        self.store.close()

    def _keyword_worker(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._keyword_pool is None:
                self._keyword_pool = ThreadPoolExecutor(2, thread_name_prefix="memvault-kw")
            return self._keyword_pool

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def safety(self) -> SafetySnapshots:
        with self._safety_lock:
            if self._safety is None:
                from memvault.backup.safety import SafetySnapshots

                self._safety = SafetySnapshots(self.store, self.settings)
            return self._safety

    def use_safety_snapshots(self, safety: SafetySnapshots) -> None:
        """Take safety snapshots through `safety` from now on (the server's runtime hands one
        that snapshots through its running scheduler)."""
        with self._safety_lock:
            self._safety = safety

    # ------------------------------------------------------------------ embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = make_embedder(self.settings.embedder, self.settings)
        return self._embedder

    def use_embedder(self, embedder: Embedder) -> None:
        """Embed through `embedder` from now on: the same model behind another caller (the
        server's batching wrapper), so the identity checked against the store still holds."""
        with self._embedder_lock:
            self._embedder = embedder

    def refuse_embedder(self, reason: str | None) -> None:
        """Refuse every write and search with `reason` (the guard's probe found the model
        behind the configured name answering differently, or the store switched models under
        this process), or serve again with None."""
        self._embedder_drift = reason

    def embedder_identity(self) -> EmbedderIdentity:
        """The configured embedder's identity, checked against the store once per process (and
        again by the guard's periodic probe, see `refuse_embedder`)."""
        if self._embedder_drift:
            raise EmbedderMismatch(self._embedder_drift, hint="restore the model the store's "
                                   "vectors were made with behind that name, or re-embed "
                                   "(`memvault reembed --embedder SPEC`)")
        if self._identity is None:
            identity = self.embedder.identity()
            self._check_embedder(identity)
            self._identity = identity
        return self._identity

    def recheck_embedder(self) -> None:
        """Check the configured embedder against the store again on next use (after a restore
        or re-embedding changed the store's active embedder under this process)."""
        self._identity = None

    def _check_embedder(self, identity: EmbedderIdentity) -> None:
        store = self.store
        # An interrupted restore leaves a partial store behind (memvault.backup.restore).
        unfinished = store.get_meta(MetaKey.RESTORE_INCOMPLETE)
        if unfinished:
            raise StoreError(
                f"the store holds an unfinished restore of backup {unfinished.get('backup')} "
                f"(started {unfinished.get('started_at')}); it is not served until finished",
                hint="re-run `memvault restore` to finish it",
            )
        active = store.meta().active_embedder
        known = store.embedders()
        if active is None or (active != identity.key and store.total() == 0):
            # A new (or still empty) store adopts the configured embedder.
            store.register_embedder(identity)
            store.set_active_embedder(identity.key)
            if active is not None:
                log.warning("empty store switched embedder from %s to %s", active, identity.key)
            return
        if active != identity.key:
            # A store re-embedded for the configured model (`memvault reembed`) holds a vector
            # from it for every memory: switch to it (a restart with the new MEMVAULT_EMBEDDER,
            # or back to the old one: the old vectors are kept).
            from memvault.memory.reembed import coverage

            stored = known.get(identity.key)
            held = ""
            if stored is not None and not stored.same_model(identity):
                held = f"; its vectors under {identity.key} come from a different model"
            elif stored is not None:
                cov = coverage(store, identity.key)
                if cov.complete:
                    store.set_active_embedder(identity.key)
                    log.warning("switched the store's active embedder from %s to %s: every "
                                "memory (%d) has a vector from it", active, identity.key,
                                cov.total)
                    return
                held = (f"; it holds vectors from {identity.key} for {cov.have} of "
                        f"{cov.total} memories")
            raise EmbedderMismatch(
                f"the store's vectors were made by {active}, but the configured embedder is "
                f"{identity.key}{held}",
                hint=REEMBED_HINT.format(spec=self.settings.embedder),
            )
        stored = known.get(active)
        if stored is not None and not stored.same_model(identity):
            raise EmbedderMismatch(
                f"the embedder {identity.key} answers probe texts differently from the model "
                f"that made the store's vectors (similarity {stored.probe_similarity(identity):.3f}"
                f", fingerprint {identity.fingerprint} vs {stored.fingerprint})",
                hint="the model behind this name was swapped; restore the original model or "
                "re-embed the store",
            )

    @property
    def llm(self) -> Any:
        """The chat-completions client of MEMVAULT_LLM (LLMNotConfigured when unset)."""
        if self._llm is None:
            from memvault.llm import make_llm

            with self._embedder_lock:
                if self._llm is None:
                    self._llm = make_llm(self.settings)
        return self._llm

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.embedder_identity()
        return self.embedder.embed(texts)

    # ------------------------------------------------------------------ writes

    def add(
        self,
        messages: Any,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        infer: bool = True,
        expiration_date: str | None = None,
        memory_type: str | None = None,
        prompt: str | None = None,
        actor: str | None = None,
        timestamp: Any = None,
    ) -> dict[str, Any]:
        """`timestamp` (Unix seconds, or ISO-8601): the memories' created_at, see
        memory/temporal.py."""
        if infer is None:  # mem0's server declares Optional[bool] = None: the default
            infer = True
        if not isinstance(infer, bool):
            raise InvalidInput("infer must be true or false")
        if infer and self.settings.llm:
            from memvault.memory.infer import infer_memories

            entities, items, meta, expires = _check_add(
                messages, user_id, agent_id, run_id, metadata, expiration_date, memory_type)
            return infer_memories(self, items, entities, metadata=meta, expiration_date=expires,
                                  memory_type=memory_type, prompt=prompt, actor=actor,
                                  created_at=temporal.check_timestamp(timestamp))
        # No LLM configured: infer stores the messages verbatim (PRODUCT.md, MEMVAULT_LLM).
        records = self.verbatim_records(
            messages, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=metadata,
            expiration_date=expiration_date, memory_type=memory_type, timestamp=timestamp)
        results = {"results": self.add_records(records, actor=actor)}
        return {**results, **self.extraction_skipped()} if infer else results

    def extraction_skipped(self) -> dict[str, str]:
        """infer=True with no LLM configured: the messages were stored verbatim. Logged once
        per instance, and said in every such response (`"extraction": "skipped"`)."""
        if not self._warned_no_llm:
            self._warned_no_llm = True
            log.warning("add(infer=True) stores messages verbatim: no LLM is configured, so no "
                        "facts are extracted (set MEMVAULT_LLM=openai:<model> or "
                        "ollama:<model>, or pass infer=False to say verbatim is meant)")
        return {"extraction": "skipped"}

    def verbatim_records(
        self,
        messages: Any,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        expiration_date: str | None = None,
        memory_type: str | None = None,
        timestamp: Any = None,
    ) -> list[MemoryRecord]:
        """Checked records for each non-system message, not yet stored (the server batches
        these from concurrent requests into one add_records call)."""
        entities, items, meta, expires = _check_add(
            messages, user_id, agent_id, run_id, metadata, expiration_date, memory_type)
        now = temporal.check_timestamp(timestamp) or utc_now()
        records = [
            MemoryRecord(
                id=str(uuid.uuid4()),
                memory=item["content"],
                hash=text_hash(item["content"]),
                created_at=now,
                updated_at=now,
                metadata=meta,
                actor_id=item["name"],
                role=item["role"],
                expiration_date=expires,
                memory_type=memory_type,
                **entities,
            )
            for item in items
            if item["role"] != "system"
        ]
        if not records:
            raise InvalidInput("messages hold only system messages; nothing to remember")
        return records

    def add_records(
        self,
        records: list[MemoryRecord],
        vectors: np.ndarray | None = None,
        *,
        actor: str | None = None,
    ) -> list[dict[str, Any]]:
        """Store prepared records (vectors computed here unless given, e.g. by the bench)."""
        identity = self.embedder_identity()
        if vectors is None:
            vectors = self.embedder.embed([r.memory for r in records])
        elif vectors.shape != (len(records), identity.dims):
            raise InvalidInput(
                f"vectors have shape {vectors.shape}, expected ({len(records)}, {identity.dims})"
            )
        outcomes = self.store.add(records, vectors, identity.key, actor or self.actor)
        results = []
        for record, outcome in zip(records, outcomes, strict=True):
            results.append({
                "id": outcome.id,
                "memory": record.memory,
                "event": "ADD" if outcome.created else "NONE",
                "actor_id": record.actor_id,
                "role": record.role,
            })
        return results

    def update(
        self,
        memory_id: str,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        expiration_date: Any = _UNSET,
        data: str | None = None,
        *,
        actor: str | None = None,
    ) -> dict[str, str]:
        memory_id = check.check_memory_id(memory_id)
        text = text if text is not None else data
        if text is None and metadata is None and expiration_date is _UNSET:
            raise InvalidInput("nothing to update: give text, metadata or expiration_date")
        current = self._require(memory_id)
        changes: dict[str, Any] = {"updated_at": utc_now()}
        vector = None
        if text is not None:
            text = check.check_text(text)
            if text != current.memory:
                changes["memory"] = text
                changes["hash"] = text_hash(text)
                vector = self._embed([text])[0]
        if metadata is not None:
            changes["metadata"] = check.check_metadata(metadata)
        if expiration_date is not _UNSET:
            changes["expiration_date"] = check.check_expiration(expiration_date)
        key = self.embedder_identity().key if vector is not None else ""
        # Only the changed fields are written, onto the row as it is under the store's write
        # lock: a concurrent update of another field, from any process, is kept.
        self.store.update(current.evolve(**changes), vector, key, actor or self.actor,
                          fields=changes.keys())
        return {"message": "Memory updated successfully!"}

    def delete(self, memory_id: str, *, actor: str | None = None) -> dict[str, str]:
        memory_id = check.check_memory_id(memory_id)
        self._require(memory_id)
        self.store.delete([memory_id], actor or self.actor)
        return {"message": "Memory deleted successfully!"}

    def delete_all(
        self,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        *,
        actor: str | None = None,
        safety_snapshot: bool = True,
    ) -> dict[str, str]:
        """Delete every memory matching all the given ids; never wider (mem0 fix). Spanning
        more than one namespace, a safety snapshot is taken first (refused if it fails)."""
        from memvault.backup.safety import Operation

        entities = check.check_entities(user_id, agent_id, run_id)
        node = _entity_node(entities)
        records = self.store.list(node)
        if len({r.namespace for r in records}) > 1:
            self.safety.before(Operation.DELETE_ALL, enabled=safety_snapshot)
        self.store.delete([r.id for r in records], actor or self.actor)
        return {"message": "Memories deleted successfully!"}

    def reset(self, *, actor: str | None = None, safety_snapshot: bool = True) -> None:
        """Delete every memory (journaled, so a backup can still bring them back), after a
        safety snapshot (refused if it fails, unless `safety_snapshot=False`)."""
        from memvault.backup.safety import Operation

        self.safety.before(Operation.RESET, enabled=safety_snapshot)
        ids = [r.id for r in self.store.list(None)]
        self.store.delete(ids, actor or self.actor)

    # ------------------------------------------------------------------ reads

    def get(self, memory_id: str) -> dict[str, Any] | None:
        record = self.store.get(check.check_memory_id(memory_id))
        return format_record(record) if record else None

    def _require(self, memory_id: str) -> MemoryRecord:
        record = self.store.get(memory_id)
        if record is None:
            raise NotFound(f"Memory with id {memory_id} not found")
        return record

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int = 20,
        limit: int | None = None,
        show_expired: bool = False,
    ) -> dict[str, Any]:
        node = self._scoped_filter(user_id, agent_id, run_id, filters)
        top_k = check.check_top_k(limit if limit is not None else top_k)
        records = self.store.list(node, limit=top_k, include_expired=bool(show_expired))
        return {"results": [format_record(r) for r in records]}

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int = 20,
        limit: int | None = None,
        threshold: float | None = 0.1,
        rerank: bool = False,
        explain: bool = False,
        show_expired: bool = False,
        search_mode: str | None = None,
        reference_date: Any = None,
    ) -> dict[str, Any]:
        """`reference_date`: search the store as it was on that date (memory/temporal.py)."""
        query = check.check_text(query, "query")
        node = self._scoped_filter(user_id, agent_id, run_id, filters)
        as_of = temporal.as_of(reference_date, bool(show_expired))
        if as_of is not None:
            node, show_expired = Bool("AND", (node, as_of)), True  # expiry judged in as_of
        top_k = check.check_top_k(limit if limit is not None else top_k)
        threshold = check.check_threshold(threshold)
        mode = check.check_search_mode(search_mode, self.settings.search)
        key = self.embedder_identity().key
        scored = self._ranked(query, node, top_k, mode, key, bool(show_expired),
                              temporal.reference_day(reference_date))
        # best first: the first top_k above the threshold (a memory deleted since is left out)
        chosen = [h for h in scored if threshold is None or h.score >= threshold][:top_k]
        records = self.store.records([hit.memory_id for hit in chosen])
        results = []
        for hit in chosen:
            if hit.memory_id not in records:
                continue
            item = format_record(records[hit.memory_id], hit.score, with_score=True)
            if explain:
                item["score_details"] = hit.details(mode, key)
            results.append(item)
        return {"results": results}

    def _ranked(
        self, query: str, node: Node, top_k: int, mode: SearchMode, key: str,
        show_expired: bool, reference: date | None = None,
    ) -> list[Scored]:
        """Candidates of one search, best first, before the threshold and the top_k cut."""
        if mode is SearchMode.KEYWORD:
            return single(self.store.keyword_ids(query, node, top_k, show_expired), mode)
        if mode is SearchMode.VECTOR:
            vector = self._embed([query])[0]
            return single(self.store.search_ids(vector, key, node, top_k, None, show_expired),
                          mode)
        wanted = max(top_k, CANDIDATES)
        keyword = self._keyword_worker().submit(
            self.store.keyword_ids, query, node, wanted, show_expired)
        try:
            vector = self._embed([query])[0]
            vector_hits = self.store.search_ids(vector, key, node, wanted, None, show_expired,
                                                candidates=True)
        except BaseException:
            wait([keyword])  # never leave it running; the embedder's or store's error wins
            raise
        return hybrid_ranking(self.store, query, vector_hits, keyword.result(), top_k, node,
                              show_expired, reference)

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        memory_id = check.check_memory_id(memory_id)
        return [format_history(e) for e in self.store.history(memory_id)]

    def entities(self) -> list[dict[str, Any]]:
        return self.store.entities()

    def record(self, memory_id: str) -> MemoryRecord | None:
        """The stored record (the API checks its scope before showing it), or None."""
        return self.store.get(memory_id)

    def record_history(self, memory_id: str) -> list[JournalEntry]:
        """The journal entries of one memory, oldest first (also of a deleted one)."""
        return self.store.history(memory_id)

    def records(self, node: Node | None, *, limit: int | None = None,
                include_expired: bool = True) -> list[MemoryRecord]:
        """Records matching a parsed filter (None: all), newest first."""
        return self.store.list(node, limit=limit, include_expired=include_expired)

    def _scoped_filter(
        self, user_id: Any, agent_id: Any, run_id: Any, filters: Any
    ) -> Node:
        entities = check.check_entities(user_id, agent_id, run_id, required=False)
        parsed = parse_filters(filters)
        parts: list[Node] = [_entity_node(entities)] if entities else []
        if parsed is not None:
            parts.append(parsed)
        node: Node | None = parts[0] if len(parts) == 1 else (Bool("AND", tuple(parts))
                                                              if parts else None)
        if not entity_constraints(node) and not _names_entity(node):
            raise InvalidInput(
                "filters must name user_id, agent_id or run_id",
                hint="e.g. filters={'user_id': 'alice'}, or {'user_id': '*'} for every user's; "
                "memories are always scoped",
            )
        assert node is not None
        return node


def _check_add(
    messages: Any, user_id: Any, agent_id: Any, run_id: Any, metadata: Any,
    expiration_date: Any, memory_type: Any,
) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, Any] | None, str | None]:
    entities = check.check_entities(user_id, agent_id, run_id)
    items = check.normalize_messages(messages)
    meta = check.check_metadata(metadata)
    expires = check.check_expiration(expiration_date)
    check.check_label(memory_type, "memory_type")
    return entities, items, meta, expires


def _names_entity(node: Node | None) -> bool:
    """A top-level `{"user_id": "*"}` (any user, as mem0 accepts) also names the scope."""
    items = node.items if isinstance(node, Bool) and node.op == "AND" else (node,)
    return any(isinstance(i, Cond) and i.key in ENTITY_KEYS and i.op == "exists" for i in items)


def _entity_node(entities: dict[str, str]) -> Node:
    conds = tuple(Cond(key, "eq", value) for key, value in entities.items())
    return conds[0] if len(conds) == 1 else Bool("AND", conds)
