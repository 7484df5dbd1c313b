"""Garbage collection: delete objects no branch or tag can reach (DESIGN.md section 5).

Reachable: every snapshot on the history of a branch tip, of every earlier version of a
branch still listed, or of a tag; their transaction logs; the manifests they point to; the
chunk objects those manifests (and loose refs) name. Anything else is garbage: chunks of
failed or abandoned writes, objects of commits that lost a race. Nothing younger than the
grace period is deleted, so forks still writing chunks for a commit in flight are safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from icechunk_dist._types import encode_id
from icechunk_dist.format import KIND_NATIVE, ObjectType, RefData, decode_object
from icechunk_dist.session._io import ManifestCache, read_repo_info, read_snapshot
from icechunk_dist.storage import ObjectNotFoundError, Storage

__all__ = ["GCSummary", "garbage_collect"]


@dataclass(frozen=True)
class GCSummary:
    """What :meth:`Repository.garbage_collect` deleted (or would delete, dry run)."""

    chunks_deleted: int
    manifests_deleted: int
    snapshots_deleted: int
    transaction_logs_deleted: int
    bytes_deleted: int
    dry_run: bool

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"{verb} {self.chunks_deleted} chunks, {self.manifests_deleted} manifests, "
                f"{self.snapshots_deleted} snapshots, {self.transaction_logs_deleted} "
                f"transaction logs ({self.bytes_deleted} bytes)")


async def _root_snapshots(storage: Storage) -> set[str]:
    roots: set[str] = {(await read_repo_info(storage)).initial_snapshot_id}
    async for meta in storage.list("refs/"):
        if meta.key.endswith("/deleted"):
            continue
        try:
            ref = decode_object(await storage.get(meta.key), RefData, ObjectType.REF,
                                name=meta.key)
        except ObjectNotFoundError:
            continue
        if ref.snapshot_id is not None:
            roots.add(ref.snapshot_id)
    # a deleted tag's snapshot stays reachable only through other refs
    async for meta in storage.list("refs/tag."):
        if meta.key.endswith("/deleted"):
            ref_key = meta.key[: -len("deleted")] + "ref"
            try:
                ref = decode_object(await storage.get(ref_key), RefData, ObjectType.REF,
                                    name=ref_key)
            except ObjectNotFoundError:
                continue
            if ref.snapshot_id is not None:
                roots.discard(ref.snapshot_id)
    return roots


async def garbage_collect(storage: Storage, older_than: datetime, *, dry_run: bool
                          ) -> GCSummary:
    """Mark from every ref, then sweep unreachable objects older than ``older_than``."""
    snapshots: set[str] = set()
    manifests: set[str] = set()
    chunks: set[str] = set()
    todo = list(await _root_snapshots(storage))
    cache = ManifestCache(max_rows=1)
    while todo:
        sid = todo.pop()
        if sid in snapshots:
            continue
        snapshots.add(sid)
        snap = await read_snapshot(storage, sid)
        if snap.parent_id is not None:
            todo.append(snap.parent_id)
        for node in snap.nodes:
            for m in node.manifests:
                if m.id in manifests:
                    continue
                manifests.add(m.id)
                table = await cache.get(storage, m.id)
                native = table.ids[table.kinds == KIND_NATIVE]
                for raw in np.unique(native.view("V12").ravel()) if len(native) else []:
                    chunks.add(encode_id(bytes(raw)))
        for rec in snap.loose:
            if rec.kind == KIND_NATIVE:
                chunks.add(rec.id)
    keep = {"chunks/": chunks, "manifests/": manifests, "snapshots/": snapshots,
            "transactions/": snapshots}
    doomed: dict[str, list[tuple[str, int]]] = {p: [] for p in keep}
    for prefix, live in keep.items():
        async for meta in storage.list(prefix):
            oid = meta.key[len(prefix):]
            if oid not in live and meta.last_modified < older_than:
                doomed[prefix].append((meta.key, meta.size))
    if not dry_run:
        # chunks and manifests first: a snapshot is never left pointing at deleted objects
        for prefix in ("chunks/", "manifests/", "transactions/", "snapshots/"):
            keys = [k for k, _ in doomed[prefix]]
            for i in range(0, len(keys), 1000):
                await storage.delete_many(keys[i : i + 1000])
    return GCSummary(
        chunks_deleted=len(doomed["chunks/"]),
        manifests_deleted=len(doomed["manifests/"]),
        snapshots_deleted=len(doomed["snapshots/"]),
        transaction_logs_deleted=len(doomed["transactions/"]),
        bytes_deleted=sum(s for v in doomed.values() for _, s in v),
        dry_run=dry_run,
    )
