"""Conflict detection and solving for rebase (pure: no I/O).

A rebase replays a session's change-set on top of commits that landed on its branch after
the session began. Each landed commit is described by its transaction log; this module
compares our change-set with those logs, names every conflict precisely (type, node path,
chunk coordinates), lets a :class:`ConflictSolver` choose a side for each, and rewrites the
change-set so it applies to the new tip.

Better than a plain double-write check: a landed commit that only *extended* an array's
shape (an append) does not conflict with our writes to other chunks of that array.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from enum import Enum
from itertools import chain

import numpy as np

from icechunk_dist._conflict import Conflict, ConflictType
from icechunk_dist._merge_rules import is_inside, parent_paths, removes_node
from icechunk_dist.changeset import ArrayChunks, ChangeSet
from icechunk_dist.errors import RebaseFailedError
from icechunk_dist.format import NodeRecord, SnapshotData, TransactionLogData
from icechunk_dist.format.chunktable import coord_keys

__all__ = [
    "BasicConflictSolver",
    "Conflict",
    "ConflictDetector",
    "ConflictSolver",
    "ConflictType",
    "VersionSelection",
    "adopt_identical_nodes",
    "detect_conflicts",
    "public_path",
    "rebase_changes",
]


def public_path(path: str) -> str:
    """Our internal node path (``""``, ``"a/b"``) as users see it (``"/"``, ``"/a/b"``)."""
    return "/" + path


class VersionSelection(Enum):
    """Which side wins a conflict."""

    Fail = 0
    UseOurs = 1
    UseTheirs = 2


class ConflictSolver(abc.ABC):
    """Decides, conflict by conflict, which side wins. Subclass and implement
    :meth:`choose`; return ``VersionSelection.Fail`` to refuse."""

    @abc.abstractmethod
    def choose(self, conflict: Conflict) -> VersionSelection:
        """Pick the winner of ``conflict``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ConflictDetector(ConflictSolver):
    """Fails on every conflict; rebases only when the changes are independent."""

    def choose(self, conflict: Conflict) -> VersionSelection:
        return VersionSelection.Fail


class BasicConflictSolver(ConflictSolver):
    """Resolves chunk double-writes by a fixed policy, and optionally deletes of updated nodes.

    Parameters
    ----------
    on_chunk_conflict
        ``UseOurs`` (default), ``UseTheirs`` or ``Fail`` for chunks both sides wrote.
    fail_on_delete_of_updated_array, fail_on_delete_of_updated_group
        If False (default), our delete of a node they updated wins; if True, it is a failure.
    """

    def __init__(
        self,
        *,
        on_chunk_conflict: VersionSelection = VersionSelection.UseOurs,
        fail_on_delete_of_updated_array: bool = False,
        fail_on_delete_of_updated_group: bool = False,
    ) -> None:
        self.on_chunk_conflict = on_chunk_conflict
        self.fail_on_delete_of_updated_array = fail_on_delete_of_updated_array
        self.fail_on_delete_of_updated_group = fail_on_delete_of_updated_group

    def choose(self, conflict: Conflict) -> VersionSelection:
        t = conflict.conflict_type
        if t in (ConflictType.ChunkDoubleUpdate, ConflictType.KeyDoubleUpdate):
            return self.on_chunk_conflict
        if t is ConflictType.DeleteOfUpdatedArray:
            return (VersionSelection.Fail if self.fail_on_delete_of_updated_array
                    else VersionSelection.UseOurs)
        if t is ConflictType.DeleteOfUpdatedGroup:
            return (VersionSelection.Fail if self.fail_on_delete_of_updated_group
                    else VersionSelection.UseOurs)
        return VersionSelection.Fail

    def __repr__(self) -> str:
        return (f"BasicConflictSolver(on_chunk_conflict={self.on_chunk_conflict}, "
                f"fail_on_delete_of_updated_array={self.fail_on_delete_of_updated_array}, "
                f"fail_on_delete_of_updated_group={self.fail_on_delete_of_updated_group})")


def detect_conflicts(ours: ChangeSet, base: SnapshotData,
                     theirs: Sequence[TransactionLogData]) -> list[Conflict]:
    """Every conflict between ``ours`` (made on ``base``) and the landed ``theirs`` logs.

    Besides the same node, chunk or key changed on both sides, the hierarchy: our new node
    or key inside a group they deleted (``NewNodeInInvalidGroup``), and our delete of a
    group inside which they created or changed anything (``DeleteOfUpdatedGroup``).
    """
    base_nodes = {n.path: n for n in base.nodes}
    out: list[Conflict] = []
    for tx in theirs:
        their_new = set(tx.new_groups) | set(tx.new_arrays)
        their_upd_arr, their_upd_grp = set(tx.updated_arrays), set(tx.updated_groups)
        their_del_arr, their_del_grp = set(tx.deleted_arrays), set(tx.deleted_groups)
        their_chunks = {c.path: c for c in tx.chunks}
        extended = set(tx.extended_arrays)

        def add(t: ConflictType, path: str, chunks: list[tuple[int, ...]] | None = None,
                _sid: str = tx.snapshot_id) -> None:
            out.append(Conflict(t, public_path(path), chunks, _sid))

        for path, rec in sorted(ours.nodes.items()):
            old = base_nodes.get(path)
            is_new = old is None or old.node_id != rec.node_id
            if is_new:
                if path in their_new:
                    add(ConflictType.NewNodeConflictsWithExistingNode, path)
                elif any(p in their_del_grp for p in parent_paths(path)):
                    add(ConflictType.NewNodeInInvalidGroup, path)
                continue
            if path in their_del_arr:
                add(ConflictType.ZarrMetadataUpdateOfDeletedArray, path)
            elif path in their_del_grp:
                add(ConflictType.ZarrMetadataUpdateOfDeletedGroup, path)
            elif path in their_upd_arr or path in their_upd_grp or path in their_new:
                add(ConflictType.ZarrMetadataDoubleUpdate, path)
        id_to_path = {r.node_id: p for p, r in ours.nodes.items()}
        for p, r in base_nodes.items():
            id_to_path.setdefault(r.node_id, p)
        for nid in sorted(ours.chunks):
            ac = ours.chunks[nid]
            cpath = id_to_path.get(nid)
            if cpath is None or not len(ac):
                continue
            old = base_nodes.get(cpath)
            if old is None or old.node_id != nid:
                continue  # chunks of a node we created: covered by the node conflict
            if cpath in their_del_arr or cpath in their_new:
                add(ConflictType.ChunksUpdatedInDeletedArray, cpath, _coords(ac))
                continue
            if cpath in their_upd_arr and cpath not in extended:
                add(ConflictType.ChunksUpdatedInUpdatedArray, cpath, _coords(ac))
            tc = their_chunks.get(cpath)
            if tc is not None and tc.node_id == nid and tc.count:
                theirs_coords = np.frombuffer(tc.coords, "<i8").reshape(tc.count, tc.ndim)
                mine = ac.table
                both = mine.coords[np.isin(mine.keys(), coord_keys(theirs_coords))]
                if len(both):
                    add(ConflictType.ChunkDoubleUpdate, cpath,
                        [tuple(int(v) for v in row) for row in both])
        for path, rec in sorted(ours.deleted.items()):
            cur = ours.nodes.get(path)
            if cur is not None and cur.node_id == rec.node_id:
                continue
            touched = (path in their_upd_arr or path in their_upd_grp or path in their_chunks
                       or path in their_new)
            if not touched and rec.kind != "array":
                # deleting a group deletes its subtree: nodes they created or changed inside
                # it (and chunks they wrote there) would vanish silently on replay
                touched = any(is_inside(p, path) for p in chain(
                    their_new, their_upd_arr, their_upd_grp, their_chunks, tx.loose_keys))
            if touched:
                add(ConflictType.DeleteOfUpdatedArray if rec.kind == "array"
                    else ConflictType.DeleteOfUpdatedGroup, path)
        for key in sorted(set(ours.loose) & set(tx.loose_keys)):
            add(ConflictType.KeyDoubleUpdate, key)
        for key, ref in sorted(ours.loose.items()):
            # a key we wrote inside a group they deleted would outlive its group
            if ref is not None and any(p in their_del_grp for p in parent_paths(key)):
                add(ConflictType.NewNodeInInvalidGroup, key)
    return out


def rebase_changes(ours: ChangeSet, new_base: SnapshotData,
                   resolved: Sequence[tuple[Conflict, VersionSelection]]) -> ChangeSet:
    """Rewrite ``ours`` so it applies on ``new_base``, honouring the chosen sides.

    ``UseOurs`` keeps our change (it overwrites theirs); ``UseTheirs`` drops our part of
    the conflict. A group we delete takes with it whatever the landed commits put inside
    it (nodes, their chunks, keys); keeping their side of ``DeleteOfUpdatedGroup`` keeps the
    group with its whole subtree (docs/design/009-order-independent-merge.md).

    Raises
    ------
    RebaseFailedError
        If the choices would leave a node (or a key) of ours without its parent group,
        for instance ``UseOurs`` for ``NewNodeInInvalidGroup``: one
        ``NewNodeInInvalidGroup`` conflict per such path.
    """
    out = ChangeSet(
        nodes=dict(ours.nodes), new_paths=set(ours.new_paths), deleted=dict(ours.deleted),
        chunks={k: ArrayChunks(v.ndim, v.table) for k, v in ours.chunks.items()},
        loose=dict(ours.loose),
    )
    tip = {n.path: n for n in new_base.nodes}
    for conflict, choice in resolved:
        path = conflict.path[1:]
        t = conflict.conflict_type
        if choice is VersionSelection.UseTheirs:
            if t is ConflictType.ChunkDoubleUpdate:
                rec = out.nodes.get(path) or tip.get(path)
                if rec is not None and rec.node_id in out.chunks:
                    ac = out.chunks[rec.node_id]
                    keys = coord_keys(np.asarray(conflict.conflicted_chunks or [], np.int64))
                    out.chunks[rec.node_id] = ArrayChunks(ac.ndim, ac.table.without(keys))
            elif t is ConflictType.KeyDoubleUpdate:
                out.loose.pop(path, None)
            elif t is ConflictType.DeleteOfUpdatedArray:
                out.deleted.pop(path, None)
            elif t is ConflictType.DeleteOfUpdatedGroup:
                # their group survives with its whole subtree: drop our deletes inside it
                # too (and our replacement of the group, if we replaced it)
                for p in [p for p in out.deleted if p == path or is_inside(p, path)]:
                    del out.deleted[p]
                for k in [k for k, v in out.loose.items() if v is None and is_inside(k, path)]:
                    del out.loose[k]
                rec = out.nodes.get(path)
                if rec is not None and path in tip and tip[path].node_id != rec.node_id:
                    del out.nodes[path]
                    out.new_paths.discard(path)
                    out.chunks.pop(rec.node_id, None)
            elif t is ConflictType.ChunksUpdatedInUpdatedArray:
                # we only wrote chunks, so the node is usually not in our change-set: its
                # id is the one in the tip (same node, their metadata)
                rec = out.nodes.get(path) or tip.get(path)
                if rec is not None:
                    out.chunks.pop(rec.node_id, None)
            elif t is ConflictType.NewNodeInInvalidGroup and path in out.loose:
                out.loose.pop(path)  # a key we wrote inside their deleted group
            # ChunksUpdatedInDeletedArray: the node is gone from the tip (or replaced by a
            # new node); its chunks are dropped with the other dead nodes' below
            else:  # node-level conflicts: drop our version of the node
                rec = out.nodes.pop(path, None)
                out.new_paths.discard(path)
                if rec is not None and (path not in tip or tip[path].node_id != rec.node_id):
                    out.chunks.pop(rec.node_id, None)
    # re-anchor node bookkeeping on the new base
    for path, rec in list(out.nodes.items()):
        t_rec = tip.get(path)
        if t_rec is None:
            out.new_paths.add(path)
            out.deleted.pop(path, None)
        elif t_rec.node_id == rec.node_id:
            out.new_paths.discard(path)
        else:
            out.new_paths.add(path)
            out.deleted[path] = t_rec  # our node replaces theirs
    for path in list(out.deleted):
        if path in out.nodes and out.nodes[path].node_id == out.deleted[path].node_id:
            del out.deleted[path]
            continue
        t_rec = tip.get(path)
        if t_rec is None:
            del out.deleted[path]
        else:
            out.deleted[path] = t_rec
    _delete_subtrees(out, new_base, tip)
    # chunks of nodes that no longer exist (deleted or replaced by a landed commit) can
    # never be committed: drop them so the change-set says what the commit will do
    live = {r.node_id for r in out.nodes.values()}
    live |= {r.node_id for p, r in tip.items() if p not in out.deleted}
    for nid in [n for n in out.chunks if n not in live]:
        del out.chunks[nid]
    # keys of ours that a solver kept inside a group they deleted
    kept = [c.path[1:] for c, choice in resolved
            if c.conflict_type is ConflictType.NewNodeInInvalidGroup
            and choice is not VersionSelection.UseTheirs and c.path[1:] in out.loose]
    orphans = _orphans(out, tip, kept) - _orphans(ChangeSet(), tip, ())
    if orphans:
        # what the solver chose would leave nodes without their parent group
        raise RebaseFailedError(new_base.id, [
            Conflict(ConflictType.NewNodeInInvalidGroup, public_path(p), None, new_base.id)
            for p in sorted(orphans)])
    return out


def _delete_subtrees(out: ChangeSet, new_base: SnapshotData,
                     tip: dict[str, NodeRecord]) -> None:
    """A group we delete (or replace) takes the tip's whole subtree with it: the nodes,
    their chunks and the keys inside it that commits which landed meanwhile added."""
    groups = [p for p, r in out.deleted.items() if r.kind == "group" and removes_node(out, p)]
    if not groups:
        return
    for q, rec in tip.items():
        if q not in out.nodes and q not in out.deleted and any(is_inside(q, g) for g in groups):
            out.deleted[q] = rec
    for lref in new_base.loose:
        if lref.key not in out.loose and any(is_inside(lref.key, g) for g in groups):
            out.loose[lref.key] = None


def _orphans(changes: ChangeSet, tip: dict[str, NodeRecord], keys: Sequence[str]
             ) -> set[str]:
    """Paths of nodes (and of ``keys``) whose parent is missing or not a group once
    ``changes`` apply on ``tip`` (a missing root is the implicit root group)."""
    final = {p: r for p, r in tip.items() if p not in changes.deleted}
    final.update(changes.nodes)
    out = set()
    for p in chain(final, keys):
        if p == "":
            continue
        parent = parent_paths(p)[0]
        rec = final.get(parent)
        if (rec is None and parent != "") or (rec is not None and rec.kind != "group"):
            out.add(p)
    return out


def _same_document(a: bytes, b: bytes) -> bool:
    if a == b:
        return True
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False


def adopt_identical_nodes(ours: ChangeSet, base: SnapshotData, tip: SnapshotData,
                          theirs: Sequence[TransactionLogData]
                          ) -> tuple[ChangeSet, list[Conflict]]:
    """Treat nodes that both sides created with the same metadata as one node.

    Independent jobs often create the same group or array ("create if missing") and then
    write disjoint chunks. When a landed commit created a node at a path where we created
    one with an identical ``zarr.json``, we adopt their node: our metadata change is
    dropped and our chunk writes move to their node id. Chunks both sides wrote are
    returned as ``ChunkDoubleUpdate`` conflicts for the solver.
    """
    base_nodes = {n.path: n for n in base.nodes}
    tip_nodes = {n.path: n for n in tip.nodes}
    out = ChangeSet(
        nodes=dict(ours.nodes), new_paths=set(ours.new_paths), deleted=dict(ours.deleted),
        chunks=dict(ours.chunks), loose=dict(ours.loose),
    )
    conflicts: list[Conflict] = []
    for path, rec in sorted(ours.nodes.items()):
        old, theirs_rec = base_nodes.get(path), tip_nodes.get(path)
        if theirs_rec is None or theirs_rec.node_id == rec.node_id:
            continue
        ours_is_new = old is None or old.node_id != rec.node_id
        theirs_is_new = old is None or old.node_id != theirs_rec.node_id
        if not (ours_is_new and theirs_is_new and path not in ours.deleted):
            continue
        if theirs_rec.kind != rec.kind or not _same_document(rec.metadata, theirs_rec.metadata):
            continue
        del out.nodes[path]
        out.new_paths.discard(path)
        mine = out.chunks.pop(rec.node_id, None)
        if mine is None or not len(mine):
            continue
        out.chunks[theirs_rec.node_id] = mine
        written = [np.frombuffer(c.coords, "<i8").reshape(c.count, c.ndim)
                   for tx in theirs for c in tx.chunks
                   if c.node_id == theirs_rec.node_id and c.count]
        if written:
            both = mine.table.coords[np.isin(mine.table.keys(),
                                             coord_keys(np.concatenate(written)))]
            if len(both):
                conflicts.append(Conflict(
                    ConflictType.ChunkDoubleUpdate, public_path(path),
                    [tuple(int(v) for v in row) for row in both], tip.id,
                ))
    return out, conflicts


def _coords(ac: ArrayChunks) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row) for row in ac.table.coords]
