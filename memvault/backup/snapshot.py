"""Taking a snapshot: stage the files once, ship them to every destination, read each copy back
in full, judge it (valid or suspicious), and only then write its manifest."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memvault.backup import metrics
from memvault.backup.catalog import BackupEntry, list_backups
from memvault.backup.crypto import CHUNK, Cipher, cipher_for
from memvault.backup.destinations import Destination, open_destinations
from memvault.backup.errors import BackupCorrupt
from memvault.backup.format import (
    MANIFEST,
    MEMORIES_FILE,
    SUSPICIOUS,
    VALID,
    VECTORS_ZSTD_LEVEL,
    ZSTD_LEVEL,
    EmbedderEntry,
    FileInfo,
    Manifest,
    StagedFile,
    Validity,
    check_snapshot,
    manifest_folder,
    record_lines,
    snapshot_key,
    vector_files,
)
from memvault.backup.head import read_head, read_marker
from memvault.backup.shipper import JournalShipper
from memvault.errors import MemvaultError
from memvault.progress import NoProgress, Progress
from memvault.store import MetaKey, utc_now
from memvault.version import __version__

if TYPE_CHECKING:
    from memvault.config import Settings
    from memvault.store import Store

log = logging.getLogger("memvault.backup")
FAILED = Validity.FAILED


@dataclass
class BackupResult:
    destination: str
    id: str
    status: str  # Validity: valid | suspicious | failed
    reasons: list[str] = field(default_factory=list)
    manifest: Manifest | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {"id": self.id, "destination": self.destination, "status": self.status,
                "reasons": self.reasons, "seq": m.seq if m else None,
                "total": m.total if m else None, "counts": m.counts if m else None,
                "created_at": m.created_at if m else None, "tag": m.tag if m else None}


def new_backup_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:6]}"


def encryption_info(cipher: Cipher | None) -> dict[str, Any] | None:
    if cipher is None:
        return None
    return {"algorithm": "AES-256-GCM", "chunk_size": CHUNK, "key_id": cipher.key_fingerprint}


def create_backup(
    store: Store,
    settings: Settings,
    *,
    destinations: list[Destination] | None = None,
    accept_drop: bool = False,
    progress: Progress | None = None,
    shipper: JournalShipper | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    tag: str | None = None,
) -> list[BackupResult]:
    """Snapshot the store to every destination. Never raises for one bad destination: each
    gets a result (failed with the cause, suspicious with the reasons, or valid).

    The journal is shipped up to (at least) the snapshot's seq before any manifest is
    written, so a snapshot never leaves seqs uncovered between it and the older ones; a
    destination the journal cannot reach gets no valid snapshot either. Pass the process's
    running `shipper` (one writer of the lineage heads per process); without one, one is
    made for this run. `tag` is written into the manifest (`pre-reset` for a safety snapshot)."""
    progress = progress or NoProgress()
    dests = destinations if destinations is not None else open_destinations(settings)
    unfinished = store.get_meta(MetaKey.RESTORE_INCOMPLETE)
    if unfinished:
        reason = (f"the store holds an unfinished restore of {unfinished.get('backup')}; "
                  "finish it with `memvault restore` before backing up")
        log.error("backup refused: %s", reason)
        metrics.backup_runs.labels(FAILED).inc(len(dests))
        return [BackupResult(d.url, "", FAILED, [reason]) for d in dests]
    secret = settings.backup_encryption_key
    cipher = cipher_for(secret.get_secret_value() if secret else None)
    staging_root = Path(settings.data_dir) / "tmp"
    try:
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="backup-", dir=staging_root))
    except OSError as exc:
        why = f"cannot create a staging folder in {staging_root}: {exc.strerror or exc}"
        log.error("backup failed: %s", why)
        metrics.backup_runs.labels(FAILED).inc(len(dests))
        return [BackupResult(d.url, "", FAILED, [why]) for d in dests]
    started = time.monotonic()
    try:
        try:
            draft, snap_vector_counts = _stage(store, staging, cipher, progress, clock)
            draft.tag = tag
        except (MemvaultError, OSError) as exc:
            why = (f"cannot stage the snapshot in {staging}: {exc.strerror or exc}"
                   if isinstance(exc, OSError) else f"cannot read the store: {exc}")
            log.error("backup failed: %s", why)
            metrics.backup_runs.labels(FAILED).inc(len(dests))
            return [BackupResult(d.url, "", FAILED, [why]) for d in dests]
        shipper = shipper or JournalShipper(store, settings, dests, heartbeat=False)
        shipper.ship(new_chain_at=draft.seq)
        results = [_journal_failed(dest, draft, shipper.errors[dest.url])
                   if dest.url in shipper.errors else
                   _ship(dest, draft, snap_vector_counts, staging, cipher, settings,
                         accept_drop, progress, clock) for dest in dests]
        for dest, result in zip(dests, results, strict=True):
            if result.status == VALID and result.manifest:
                _note(shipper, dest, result.manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("backup %s finished in %.2fs: %s", draft.id, time.monotonic() - started,
             ", ".join(f"{r.destination}={r.status}" for r in results))
    return results


def _journal_failed(dest: Destination, draft: Manifest, why: str) -> BackupResult:
    reason = (f"the journal could not be shipped up to seq {draft.seq} first, so this "
              f"snapshot would leave seqs uncovered: {why}")
    log.error("backup %s to %s failed: %s", draft.id, dest, reason)
    metrics.backup_runs.labels(FAILED).inc()
    return BackupResult(dest.url, draft.id, FAILED, [reason])


def _note(shipper: JournalShipper, dest: Destination, manifest: Manifest) -> None:
    try:
        shipper.note_snapshot(dest, manifest)
    except MemvaultError as exc:  # the listing still shows the backup; logged for people
        log.error("cannot name backup %s in the lineage head of %s: %s", manifest.id, dest,
                  exc)


def _stage(store: Store, staging: Path, cipher: Cipher | None, progress: Progress,
           clock: Callable[[], datetime]) -> tuple[Manifest, dict[str, int]]:
    meta = store.meta()
    identities = store.embedders()
    opened: list[StagedFile] = []

    def staged(name: str, level: int = ZSTD_LEVEL) -> StagedFile:
        opened.append(StagedFile(staging / name, cipher, level))
        return opened[-1]

    try:
        return _stage_files(store, meta, identities, staged, encryption_info(cipher), progress,
                            clock)
    except BaseException:
        for file in opened:  # no writer thread or open file outlives a failed run
            file.abort()
        raise


def _stage_files(store: Store, meta: Any, identities: dict[str, Any],
                 staged: Callable[..., StagedFile], encryption: dict[str, Any] | None,
                 progress: Progress, clock: Callable[[], datetime]
                 ) -> tuple[Manifest, dict[str, int]]:
    with store.snapshot() as snap:
        created = clock()  # for people and `--at`; order follows snap.seq
        counts = dict(sorted(snap.counts().items()))
        vector_counts = {k: v for k, v in sorted(snap.vector_counts().items()) if v}
        files: dict[str, FileInfo] = {}
        advance = progress.task("snapshot: memories", sum(counts.values()))
        out = staged(MEMORIES_FILE)
        for batch in snap.iter_records(5000):
            out.write(record_lines(batch))
            advance(len(batch))
        files[MEMORIES_FILE] = out.close()
        embedders = []
        for index, key in enumerate(vector_counts):
            vec_name, ids_name = vector_files(index)
            advance = progress.task(f"snapshot: vectors {key}", vector_counts[key])
            vec_out = staged(vec_name, VECTORS_ZSTD_LEVEL)
            ids_out = staged(ids_name)
            count, dims = 0, 0
            for ids, matrix in snap.iter_vectors(key, 5000):
                vec_out.write(matrix.astype("<f4", copy=False).tobytes())
                ids_out.write(("\n".join(ids) + "\n").encode("utf-8"))
                count += len(ids)
                dims = matrix.shape[1]
                advance(len(ids))
            files[vec_name] = vec_out.close()
            files[ids_name] = ids_out.close()
            identity = identities.get(key)
            embedders.append(EmbedderEntry(
                key=key, identity=identity.to_json() if identity else {"key": key},
                count=count, dims=dims or (identity.dims if identity else 0),
                vectors_file=vec_name, ids_file=ids_name))
        manifest = Manifest(
            id=new_backup_id(created), store_id=meta.store_id, lineage_id=meta.lineage_id,
            backend=store.backend, seq=snap.seq,
            created_at=created.isoformat(timespec="microseconds"), completed_at="",
            memvault_version=__version__, counts=counts,
            active_embedder=meta.active_embedder, embedders=embedders, files=files,
            encryption=encryption)
    return manifest, vector_counts


def _ship(dest: Destination, draft: Manifest, vector_counts: dict[str, int], staging: Path,
          cipher: Cipher | None, settings: Settings, accept_drop: bool, progress: Progress,
          clock: Callable[[], datetime]) -> BackupResult:
    written: list[str] = []
    try:
        history = list_backups(dest)
        advance = progress.task(f"upload to {dest.url}", len(draft.files))
        folder = manifest_folder(draft)
        for name in draft.files:
            key = snapshot_key(folder, name)
            dest.put_file(key, staging / name)
            written.append(key)
            advance(1)
        manifest = Manifest.from_json(draft.to_json())
        previous = previous_backup(dest, manifest, history)
        reasons = judge(dest, manifest, vector_counts, cipher, previous, settings, accept_drop)
        manifest.completed_at = clock().isoformat(timespec="microseconds")
        manifest.validation = _validation(manifest, reasons, previous)
        dest.put_bytes(snapshot_key(folder, MANIFEST), manifest.to_bytes())
    except MemvaultError as exc:
        log.error("backup %s to %s failed: %s", draft.id, dest, exc)
        _remove_failed(dest, snapshot_key(manifest_folder(draft), MANIFEST), written)
        metrics.backup_runs.labels(FAILED).inc()
        return BackupResult(dest.url, draft.id, FAILED, [str(exc)])
    status = manifest.status
    metrics.backup_runs.labels(status).inc()
    if status == VALID:
        metrics.backup_last_success.labels(dest.url).set(time.time())
        metrics.backup_last_memories.set(manifest.total)
        log.info("backup %s to %s is valid: %d memories at seq %d", manifest.id, dest,
                 manifest.total, manifest.seq)
    else:
        log.error("backup %s to %s is SUSPICIOUS and will never count as valid: %s",
                  manifest.id, dest, "; ".join(reasons))
    return BackupResult(dest.url, draft.id, status, reasons, manifest)


def _remove_failed(dest: Destination, manifest_key: str, written: list[str]) -> None:
    """Remove what a failed run wrote, its manifest FIRST: the manifest may have been stored
    although its upload was answered with an error, and a manifest left without its data
    would read as a backup. An unreachable destination keeps its partials (logged; the
    catalog never counts a manifest whose files are missing as valid)."""
    try:
        dest.delete([manifest_key])
    except MemvaultError as exc:
        log.error("cannot remove the manifest %s of a failed backup from %s: %s", manifest_key,
                  dest, exc)
        return
    try:
        dest.delete(written)
    except MemvaultError as exc:
        log.error("cannot remove the files of a failed backup from %s: %s", dest, exc)


def judge(dest: Destination, manifest: Manifest, vector_counts: dict[str, int],
          cipher: Cipher | None, previous: Previous | None, settings: Settings,
          accept_drop: bool) -> list[str]:
    """Why this copy is not valid (empty list = valid): a full read-back, then plausibility."""
    reasons: list[str] = []
    try:
        summary = check_snapshot(dest, manifest, cipher)
    except BackupCorrupt as exc:
        reasons.append(f"read-back failed: {exc}")
    else:
        read_vectors = {key: len(ids) for key, ids in summary.vectors.items()}
        if read_vectors != vector_counts:
            reasons.append(f"vectors read back {read_vectors} differ from the store's "
                           f"{vector_counts} at seq {manifest.seq}")
        for key, ids in summary.vectors.items():
            if not summary.ids.issuperset(ids):
                reasons.append(f"vectors of {key} name memories that are not in the backup")
    held = previous is not None and previous.lineage_id == manifest.lineage_id and previous.total
    if manifest.total == 0 and (manifest.seq > 0 or held):
        reasons.append(f"the store is empty although its lineage has held data (journal at seq "
                       f"{manifest.seq}); a backup of an empty store never replaces good ones")
    elif previous and not accept_drop and (
            previous.lineage_id == manifest.lineage_id or manifest.total == 0):
        # Another lineage's backups judge only an empty newcomer (the incident: a new empty
        # database backed up over the good backups). A store with data of its own lineage is
        # a neighbour sharing the destination (or adopted on purpose), judged by its own.
        floor = (1 - settings.alert_drop_ratio) * previous.total
        if manifest.total < floor:
            reasons.append(
                f"holds {manifest.total} memories, fewer than {1 - settings.alert_drop_ratio:.0%}"
                f" of the previous valid backup {previous.name} ({previous.total}); if "
                "the drop is intended, run `memvault backup create --accept-drop`")
    return reasons


@dataclass(frozen=True)
class Previous:
    """What a new snapshot is compared with: the previous valid backup, as the listing shows
    it or, when the listing shows none, as a lineage head read by GET says it was."""

    name: str
    seq: int | None
    total: int
    backup_id: str | None
    lineage_id: str


def previous_backup(dest: Destination, manifest: Manifest, history: list[BackupEntry]
                    ) -> Previous | None:
    """The highest-seq valid backup of this lineage (else the newest of any lineage, so a
    replaced store is compared with what it replaced). A listing is not proof of absence:
    the lineage heads (GET) name the newest valid snapshot of each lineage, and win when the
    listing shows an older one or none."""
    valid = [e for e in history if e.valid and e.manifest]
    own = [e for e in valid if e.manifest and e.manifest.lineage_id == manifest.lineage_id]
    best = max(own or valid, key=BackupEntry.order, default=None)
    listed = Previous(best.id, best.seq, best.manifest.total, best.id,
                      best.manifest.lineage_id) if best and best.manifest else None
    try:
        heads = [h for h in (read_head(dest, lin) for lin in
                             {manifest.lineage_id, *read_marker(dest)}) if h]
    except MemvaultError as exc:
        log.warning("cannot read the lineage heads of %s to judge backup %s: %s", dest,
                    manifest.id, exc)
        return listed
    for head in heads:
        if head.memories is None or head.snapshot_seq is None:
            continue
        mine = head.lineage_id == manifest.lineage_id
        shown = own if mine else [e for e in valid if e.manifest
                                  and e.manifest.lineage_id == head.lineage_id]
        if any(e.seq >= head.snapshot_seq for e in shown):
            continue  # the listing shows it (or a newer one)
        if listed is not None and not mine and own:
            continue  # another lineage's head never outranks this lineage's own history
        if listed is None or mine or head.memories > listed.total:
            listed = Previous(
                f"at seq {head.snapshot_seq} of lineage {head.lineage_id} (named by its head; "
                "the listing does not show it)", head.snapshot_seq, head.memories, None,
                head.lineage_id)
    return listed


def _validation(manifest: Manifest, reasons: list[str], previous: Previous | None
                ) -> dict[str, Any]:
    return {
        "status": SUSPICIOUS if reasons else VALID,
        "reasons": reasons,
        "checked_at": utc_now(),
        "read_back": "full: every file re-read, sha256 and sizes checked, counts compared",
        "store_counts_at_seq": manifest.counts,
        "previous_valid": previous.backup_id or previous.name if previous else None,
        "previous_valid_total": previous.total if previous else None,
    }
