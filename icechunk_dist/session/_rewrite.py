"""Rewriting the manifests of every array with the configured split size
(``Repository.rewrite_manifests``, Icechunk's call): a commit kind of the one pipeline.

The data does not change, so the commit's transaction log is empty and a rebase across it
has nothing to replay; the one thing a later commit must pick up is the new split shape of
the arrays, which :func:`adopt_split_shapes` gives the change-set of a session that rebases
onto it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from icechunk_dist._types import new_id
from icechunk_dist.changeset import ChangeSet
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import SessionStateError
from icechunk_dist.format import (
    ChunkTable,
    ManifestRef,
    NodeRecord,
    ObjectType,
    SnapshotData,
    TransactionLogData,
)
from icechunk_dist.session._commit import combine_transaction_logs, write_snapshot
from icechunk_dist.session._history import History
from icechunk_dist.session._io import (
    ManifestCache,
    amend_marker_key,
    gather_limited,
    manifest_key,
    read_transaction_log,
    write_object,
)
from icechunk_dist.session._keys import choose_split_shape
from icechunk_dist.storage import Storage

__all__ = ["RewriteCommit", "adopt_split_shapes"]


@dataclass
class RewriteCommit:
    """The commit of ``Repository.rewrite_manifests``: the base's nodes with their chunk refs
    in new manifests (:func:`_resplit`), nothing else changed; with ``amend`` it replaces
    the branch tip instead of adding a commit (the tip's transaction log is kept). Not
    rebased, as Icechunk's: a branch that moved meanwhile fails it with
    ``BranchMovedError``."""

    amend: bool = False
    rebases: bool = False

    async def build(self, source: Any, history: History, base: SnapshotData,
                    changes: ChangeSet, message: str, metadata: dict[str, Any]
                    ) -> SnapshotData:
        storage: Storage = source.storage
        config: RepositoryConfig = source.config
        tip = base
        if self.amend:
            # read the tip again: expiry may have re-parented it (and marked it) in place
            history.forget(base.id)
            tip = await history.snapshot(base.id)
            if tip.parent_id is None:
                raise SessionStateError("the repository's first commit cannot be amended")
        nodes = tuple([await _resplit(storage, config, source.manifests, n)
                       for n in tip.nodes])
        sid = new_id()
        empty = TransactionLogData(snapshot_id=sid)
        if not self.amend:
            return await write_snapshot(
                storage, config.compression_level, snapshot_id=sid, parent=tip, nodes=nodes,
                loose=tip.loose, message=message, metadata=metadata, txlog=empty)
        txlog = combine_transaction_logs(sid, await read_transaction_log(storage, tip.id),
                                         empty)
        # the marker tells the ops log this ref update was an amend (refs never say why)
        await storage.put(amend_marker_key(sid), tip.id.encode(), mode="create")
        return await write_snapshot(
            storage, config.compression_level, snapshot_id=sid, parent=None,
            parent_id=tip.parent_id, ancestors=tip.ancestors,
            original_parent_id=tip.original_parent_id, nodes=nodes, loose=tip.loose,
            message=message, metadata=metadata, txlog=txlog)


async def _resplit(storage: Storage, config: RepositoryConfig, cache: ManifestCache,
                   node: NodeRecord) -> NodeRecord:
    """``node`` with its chunk refs written to new manifests, split by the configured size."""
    if node.array is None:
        return node
    info = node.array
    split_shape = choose_split_shape(info.shape, info.chunk_shape, config.manifest_split_size)
    tables = await gather_limited([cache.get(storage, m.id) for m in node.manifests],
                                  config.max_concurrent_requests)
    table = ChunkTable.concat(tables, max(1, len(info.shape))).normalized()
    refs: list[ManifestRef] = []
    for split, part in sorted(table.split(split_shape).items()):
        mid = new_id()
        await write_object(storage, manifest_key(mid), part.to_manifest(node.node_id),
                           ObjectType.MANIFEST, config.compression_level)
        refs.append(ManifestRef(id=mid, split=split, count=len(part)))
    return msgspec.structs.replace(
        node, array=msgspec.structs.replace(info, split_shape=split_shape),
        manifests=tuple(refs))


def adopt_split_shapes(changes: ChangeSet, base: SnapshotData) -> None:
    """Give the arrays whose metadata ``changes`` rewrote the manifest split shape they have
    in ``base`` (a rebase target that :class:`RewriteCommit` may have re-split), so that
    their manifests are built on the splits of the base's manifests. In place."""
    by_id = {n.node_id: n for n in base.nodes}
    for path, rec in list(changes.nodes.items()):
        old = by_id.get(rec.node_id)
        if (rec.array is not None and old is not None and old.array is not None
                and rec.array.chunk_shape == old.array.chunk_shape
                and rec.array.split_shape != old.array.split_shape):
            info = msgspec.structs.replace(rec.array, split_shape=old.array.split_shape)
            changes.nodes[path] = msgspec.structs.replace(rec, array=info)
