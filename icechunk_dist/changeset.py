"""Pure change records: what a session changed on top of its base snapshot, and their merge.

No I/O here. A :class:`ChangeSet` is what a writable session or a fork accumulates; merging
change-sets is associative and deterministic, and refuses overlapping writes by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from icechunk_dist._merge_rules import MetadataFold
from icechunk_dist.errors import MergeConflictError
from icechunk_dist.format import (
    KIND_NATIVE,
    ChunkRefRecord,
    ChunkTable,
    NodeRecord,
    TableBuilder,
)
from icechunk_dist.format.chunktable import KIND_TOMBSTONE, linear_keys

__all__ = ["ArrayChunks", "ChangeSet", "MergePolicy"]

MergePolicy = Literal["fail", "last_wins"]

# fold the per-chunk builder into the columnar table past this many rows
_FOLD_AT = 65_536
# fold this many rows or fewer, each of a distinct chunk, without numpy's sort
_SMALL_FOLD = 256
# one empty table per dimensionality, shared by every ArrayChunks that holds no folded rows
# (tables are values: nothing changes a table's rows in place); a fork writing one array
# then allocates no table at all
_EMPTY: dict[int, ChunkTable] = {}


def _empty_table(ndim: int) -> ChunkTable:
    t = _EMPTY.get(ndim)
    if t is None:
        t = _EMPTY[ndim] = ChunkTable.empty(ndim)
    return t


class ArrayChunks:
    """Chunk refs written to one array (by node id) in a change-set.

    Recent writes sit in a :class:`TableBuilder` (one append per zarr ``set``) with a position
    index for read-your-writes; they are folded into a normalized :class:`ChunkTable` at merge,
    commit and pickle time, or when the builder grows large.
    """

    __slots__ = ("_builder", "_parts", "_pos", "_table", "ndim")

    def __init__(self, ndim: int, table: ChunkTable | None = None,
                 parts: Sequence[ChunkTable] | None = None) -> None:
        self.ndim = ndim
        self._table = table if table is not None else _empty_table(ndim)
        self._builder = TableBuilder(ndim)
        self._pos: dict[tuple[int, ...], int] = {}
        # normalized tables of disjoint, increasing coordinate ranges whose concatenation is
        # the table (a merge's result, concatenated when first needed); set only with no
        # ``table`` and no builder rows
        self._parts: list[ChunkTable] | None = list(parts) if parts else None

    def __len__(self) -> int:
        if not self._pos:  # no builder rows: nothing to fold (the merge's common case)
            if self._parts is not None:
                return sum(len(p) for p in self._parts)
            return len(self._table)
        if self._parts is None and not len(self._table):
            return len(self._pos)  # only builder rows: one key per distinct chunk
        return len(self.table)

    def __bool__(self) -> bool:
        # builder rows: at least one chunk written (a merge asks this of every fork's writes)
        return bool(self._pos) or len(self) > 0

    def unfolded(self) -> TableBuilder | None:
        """The builder of our writes if it holds all of them, each chunk once (nothing
        folded yet, no chunk written twice), else None: a merge may then build many such
        change-sets' rows at once (``TableBuilder.build_all``)."""
        b = self._builder
        if (self._pos and self._parts is None and self._table is _EMPTY.get(self.ndim)
                and len(self._pos) == len(b)):
            return b
        return None

    def _materialize(self) -> None:
        if self._parts is not None:
            t = ChunkTable.concat(self._parts, self.ndim)
            t.sorted_unique = True
            self._table = t
            self._parts = None

    # writes ---------------------------------------------------------------------------
    def _note(self, coord: tuple[int, ...]) -> None:
        self._pos[coord] = len(self._builder) - 1
        if len(self._builder) >= _FOLD_AT:
            self.fold()

    def set_native(self, coord: tuple[int, ...], chunk_id: bytes, length: int,
                   digest: int = 0) -> None:
        self._builder.add_native(coord, chunk_id, length, digest=digest)
        self._note(coord)

    def set_inline(self, coord: tuple[int, ...], data: bytes) -> None:
        self._builder.add_inline(coord, data)
        self._note(coord)

    def set_virtual(self, coord: tuple[int, ...], url: str, offset: int, length: int,
                    etag: str | None, modified: int = 0) -> None:
        self._builder.add_virtual(coord, url, offset, length, etag, modified)
        self._note(coord)

    def set_table(self, table: ChunkTable) -> None:
        """Record every row of ``table`` (many refs at once, e.g. virtual refs); its rows
        come after, and override, everything written before."""
        self.fold()
        if not len(self._table):
            self._table = table.normalized()
        else:
            self._table = ChunkTable.concat([self._table, table]).normalized()

    def delete(self, coord: tuple[int, ...]) -> None:
        self._builder.add_tombstone(coord)
        self._note(coord)

    def fold(self) -> None:
        self._materialize()
        if len(self._builder):
            n = len(self._builder)
            if not len(self._table) and len(self._pos) == n and n <= _SMALL_FOLD:
                # a task's few writes, each chunk once (``_pos`` has a key per row): order
                # them in Python, far cheaper than numpy's fixed costs at this size
                built = self._builder.build()
                order = [self._pos[c] for c in sorted(self._pos)]
                if order != list(range(n)):
                    built = built.take(np.asarray(order, np.int64))
                built.sorted_unique = True
                self._table = built
            else:
                self._table = ChunkTable.concat([self._table, self._builder.build()]
                                                ).normalized()
            self._builder = TableBuilder(self.ndim)
            self._pos = {}

    @property
    def table(self) -> ChunkTable:
        """The normalized table of every write (tombstones included)."""
        if self._pos or self._parts is not None:  # else already folded
            self.fold()
        return self._table

    # reads ----------------------------------------------------------------------------
    def lookup(self, coord: tuple[int, ...]) -> tuple[int, Any] | None:
        """(kind, payload) of our latest write to ``coord``, or None if we did not write it."""
        i = self._pos.get(coord)
        if i is not None:
            return self._builder.build_row(i)
        self._materialize()
        j = self._table.find(coord)
        if j < 0:
            return None
        return self._table.row_payload(j)

    def written_coords(self) -> npt.NDArray[np.int64]:
        return self.table.coords

    def __getstate__(self) -> tuple[int, ChunkTable]:
        return (self.ndim, self.table.compact())

    def __setstate__(self, state: tuple[int, ChunkTable]) -> None:
        ndim, table = state
        self.ndim = ndim
        self._table = table if len(table) else _empty_table(ndim)
        self._parts = None
        self._builder = TableBuilder(ndim)
        self._pos = {}


@dataclass
class ChangeSet:
    """Everything a session changed relative to its base snapshot.

    Attributes
    ----------
    nodes
        New or updated node records by path (their ``manifests`` field is not used).
    new_paths
        Paths of ``nodes`` that do not exist in the base snapshot.
    deleted
        Base node records deleted, by path (a path may be deleted and then re-created).
    chunks
        Chunk writes per node id.
    loose
        Writes to keys that are not array chunks (``None`` marks a deletion).
    """

    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    new_paths: set[str] = field(default_factory=set)
    deleted: dict[str, NodeRecord] = field(default_factory=dict)
    chunks: dict[str, ArrayChunks] = field(default_factory=dict)
    loose: dict[str, ChunkRefRecord | None] = field(default_factory=dict)

    # ---------------------------------------------------------------- inspection
    def is_empty(self) -> bool:
        return not (
            self.nodes or self.deleted or self.loose
            or any(len(c) for c in self.chunks.values())
        )

    def chunk_count(self) -> int:
        return sum(len(c) for c in self.chunks.values())

    def array_chunks(self, node_id: str, ndim: int) -> ArrayChunks:
        ac = self.chunks.get(node_id)
        if ac is None:
            ac = self.chunks[node_id] = ArrayChunks(ndim)
        return ac

    def copy_metadata(self) -> ChangeSet:
        """A change-set with our node changes but no chunk writes (what a fork starts from)."""
        return ChangeSet(
            nodes=dict(self.nodes),
            new_paths=set(self.new_paths),
            deleted=dict(self.deleted),
        )

    def node_paths_by_id(self) -> dict[str, str]:
        return {rec.node_id: path for path, rec in self.nodes.items()}

    # ---------------------------------------------------------------- merge
    def merge(self, other: ChangeSet, *, policy: MergePolicy = "fail",
              describe: dict[str, str] | None = None,
              ancestor: ChangeSet | None = None) -> ChangeSet:
        """Return a new change-set holding ``self`` then ``other``.

        The rules are those of :meth:`merge_many` (docs/design/009-order-independent-merge.md):
        with ``policy="fail"`` the outcome does not depend on the order of the change-sets.
        ``describe`` maps node ids to paths for error messages. ``ancestor`` is the metadata
        ``other`` started from (a fork's inherited pending changes).

        Raises
        ------
        MergeConflictError
            On overlapping changes under ``policy="fail"``.
        """
        return self.merge_many([(other, ancestor)], policy=policy, describe=describe)

    def merge_many(self, others: Sequence[tuple[ChangeSet, ChangeSet | None]], *,
                   policy: MergePolicy = "fail",
                   describe: dict[str, str] | None = None) -> ChangeSet:
        """Merge several change-sets (each with its ``ancestor``) after ``self``, in order.

        Two change-sets conflict when they change one thing differently: a chunk, a key, a
        node's metadata; a node one deletes (or replaces) and the other changes or writes
        chunks of; a group one deletes and the other creates or changes something inside.
        Identical changes are one change, a change on top of what the other change-set's
        ``ancestor`` holds is an update, and two identical creations of a node (same kind,
        same ``zarr.json``) are one node. With ``policy="fail"`` a conflict raises in every
        order; with ``"last_wins"`` the later change-set wins it (a winning group delete
        takes the earlier change-sets' nodes, chunks and keys inside the group with it).

        Chunk tables are concatenated, sorted and checked once per array, so the cost grows
        with the total number of chunk refs (n log n), not with the number of change-sets
        times the refs merged so far.

        Raises
        ------
        MergeConflictError
            On overlapping changes under ``policy="fail"``, naming the path (and the chunk
            coordinates for chunks).
        """
        names = dict(describe or {})
        _add_names(names, self)
        out = ChangeSet(nodes=dict(self.nodes), new_paths=set(self.new_paths),
                        deleted=dict(self.deleted), loose=dict(self.loose))
        gathered = _chunk_only(self, others)
        pre_built: dict[str, list[TableBuilder]] = {}
        if gathered is not None:
            per_node, ndims, pre_built = gathered.per_node, gathered.ndims, gathered.builders
        else:
            ndims = {}
            # some change-set changes metadata: the rules of the fold apply to each
            for o, _ in others:
                _add_names(names, o)
            fold = MetadataFold(self, out, policy, names)
            fold.add_all(others)
            dead = fold.dead()
            per_node = {}
            alias, floor = fold.alias, fold.floor
            for i, cs in enumerate((self, *(o for o, _ in others))):
                for nid, ac in cs.chunks.items():
                    key = fold.resolve(nid) if alias else nid
                    if key in dead or (floor and i <= floor.get(key, -1)):
                        continue  # the node is gone, or a later delete won over these writes
                    per_node.setdefault(key, []).append(ac)
                    ndims[key] = ac.ndim
        for nid in sorted(per_node):
            acs = per_node[nid]
            builders = pre_built.get(nid)
            if builders is None:
                builders = [b for ac in acs[1:] if (b := ac.unfolded()) is not None]
            if len(builders) > 1 and len(builders) == len(acs) - 1:
                # the forks' writes, unfolded (forks written in this process): build their
                # rows at once and sort and check them once, after the first table
                first = acs[0].unfolded()
                if first is not None:
                    builders = [first, *builders]
                tables = ([] if first is not None else [acs[0].table]) + [
                    TableBuilder.build_all(builders)]
                out.chunks[nid] = ArrayChunks(ndims[nid], _merge_tables(
                    tables, policy, names.get(nid, nid)))
                continue
            tables = [ac.table for ac in acs]
            if len(tables) == 1:
                out.chunks[nid] = ArrayChunks(ndims[nid], tables[0])
                continue
            parts = _disjoint_parts(tables)
            if parts is not None:  # sorted, non-overlapping: nothing to sort or check
                out.chunks[nid] = ArrayChunks(ndims[nid], parts=parts)
                continue
            merged = _merge_tables(tables, policy, names.get(nid, nid))
            out.chunks[nid] = ArrayChunks(ndims[nid], merged)
        return out

    def without_chunks_of(self, node_ids: set[str], others: Sequence[ChangeSet],
                          dropped: set[str] | None = None) -> ChangeSet:
        """A shallow copy whose chunk writes of ``node_ids`` leave out the coordinates that
        ``others`` write, and without any chunk write of the nodes in ``dropped`` (what
        those later writes and deletes override). ``self`` is not modified.
        """
        dropped = {n for n in dropped or () if n in self.chunks}
        if not node_ids and not dropped:
            return self
        out = ChangeSet(nodes=self.nodes, new_paths=self.new_paths, deleted=self.deleted,
                        loose=self.loose, chunks={k: v for k, v in self.chunks.items()
                                                  if k not in dropped})
        for nid in node_ids:
            mine = out.chunks.get(nid)
            if mine is None:
                continue
            theirs = [o.chunks[nid].table for o in others if nid in o.chunks]
            if not theirs:
                continue
            keys = ChunkTable.concat(theirs).keys()
            out.chunks[nid] = ArrayChunks(mine.ndim, mine.table.without(keys))
        return out

    # ---------------------------------------------------------------- serialization
    def __getstate__(self) -> dict[str, Any]:
        enc = msgspec.msgpack.Encoder()
        return {
            "nodes": enc.encode(list(self.nodes.values())),
            "new_paths": sorted(self.new_paths),
            "deleted": enc.encode(list(self.deleted.values())),
            "chunks": {k: v.__getstate__() for k, v in self.chunks.items()},
            "loose": enc.encode(self.loose),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        nodes = msgspec.msgpack.decode(state["nodes"], type=list[NodeRecord])
        deleted = msgspec.msgpack.decode(state["deleted"], type=list[NodeRecord])
        self.nodes = {n.path: n for n in nodes}
        self.new_paths = set(state["new_paths"])
        self.deleted = {n.path: n for n in deleted}
        self.chunks = {}
        for k, st in state["chunks"].items():
            ac = ArrayChunks.__new__(ArrayChunks)
            ac.__setstate__(st)
            self.chunks[k] = ac
        self.loose = msgspec.msgpack.decode(
            state["loose"], type=dict[str, ChunkRefRecord | None]
        )


def _disjoint_parts(tables: Sequence[ChunkTable]) -> list[ChunkTable] | None:
    """``tables`` (their non-empty ones) ordered by coordinates, if each is sorted without
    duplicates and no two cover overlapping coordinate ranges; else None.

    Then no chunk is written twice and the ordered concatenation is the normalized merge:
    forks of disjoint regions (the distributed write) merge without sorting or copying a
    row. Only the first and last row of each table are compared (tables are normalized
    after a fold); a table not marked normalized is checked with one vectorized pass over
    all of them.
    """
    # one pass in Python per table (a merge of 1,000 forks pays it 1,000 times)
    parts: list[ChunkTable] = []
    unchecked: list[ChunkTable] = []
    ndims: set[int] = set()
    for t in tables:
        if t.coords.shape[0]:
            parts.append(t)
            ndims.add(t.ndim)
            if not t.sorted_unique:
                unchecked.append(t)
    if len(parts) < 2:
        return parts or None
    if len(ndims) > 1:
        return None
    if unchecked:
        coords = np.concatenate([t.coords for t in unchecked])
        lin = linear_keys([coords])
        if lin is None:
            return None
        k = lin[0]
        inc = k[1:] > k[:-1]
        starts = np.cumsum([len(t) for t in unchecked])[:-1]
        inc[starts - 1] = True  # the step from one table to the next is not compared here
        if not bool(inc.all()):
            return None
        for t in unchecked:
            t.sorted_unique = True  # a fact about the (immutable) rows, not a change
    ends = np.empty((2 * len(parts), parts[0].coords.shape[1]), np.int64)
    ends[0::2] = [t.coords[0] for t in parts]
    ends[1::2] = [t.coords[-1] for t in parts]
    lin = linear_keys([ends])
    if lin is None:
        return None
    k = lin[0].reshape(len(parts), 2)
    order = np.argsort(k[:, 0], kind="stable")
    first, last = k[order, 0], k[order, 1]
    if not bool(np.all(first[1:] > last[:-1])):
        return None
    return [parts[i] for i in order.tolist()]


def _add_names(names: dict[str, str], cs: ChangeSet) -> None:
    """The node id -> path pairs ``cs`` knows (of nodes it changed or deleted)."""
    if cs.deleted:
        names.update({r.node_id: p for p, r in cs.deleted.items()})
    if cs.nodes:
        names.update(cs.node_paths_by_id())


class _ChunkOnly:
    """The chunk writes of a merge's change-sets by node, gathered in one pass (see
    :func:`_chunk_only`)."""

    __slots__ = ("builders", "ndims", "per_node")

    def __init__(self) -> None:
        self.per_node: dict[str, list[ArrayChunks]] = {}
        self.ndims: dict[str, int] = {}
        #: per node, the unfolded builders of the change-sets after the first that wrote it,
        #: while each of them is unfolded (:meth:`ArrayChunks.unfolded`); else absent
        self.builders: dict[str, list[TableBuilder]] = {}


def _chunk_only(first: ChangeSet,
                others: Sequence[tuple[ChangeSet, ChangeSet | None]]) -> _ChunkOnly | None:
    """The chunk writes of ``first`` then ``others`` by node, in one pass, if none of
    ``others`` changes metadata and ``first`` deletes nothing (a distributed write's forks):
    no rule of :class:`MetadataFold` can apply then, and every write counts. Else None.

    The same pass takes each change-set's unfolded builder (a fork written in this process),
    so that a merge of many forks reads each fork's objects once."""
    if first.deleted:
        return None
    g = _ChunkOnly()
    per_node, ndims, builders = g.per_node, g.ndims, g.builders
    for nid, ac in first.chunks.items():
        per_node[nid] = [ac]
        ndims[nid] = ac.ndim
        builders[nid] = []
    for y, _anc in others:
        if y.nodes or y.deleted or y.loose:
            return None
        for nid, ac in y.chunks.items():
            acs = per_node.get(nid)
            if acs is None:
                per_node[nid] = [ac]
                ndims[nid] = ac.ndim
                builders[nid] = []  # of those after the first
                continue
            acs.append(ac)
            bs = builders.get(nid)
            if bs is not None:
                b = ac.unfolded()
                if b is None:
                    del builders[nid]  # one folded table: the node's tables merge as tables
                else:
                    bs.append(b)
    return g


def _merge_tables(tables: Sequence[ChunkTable], policy: MergePolicy, path: str) -> ChunkTable:
    """Concatenate normalized tables (later wins), refusing different writes of one chunk."""
    cat = ChunkTable.concat(list(tables))
    n = len(cat)
    if n == 0:
        return cat.normalized()
    lin = linear_keys([cat.coords])
    keys: npt.NDArray[Any] = lin[0] if lin is not None else cat.keys()
    if lin is not None and (n == 1 or bool(np.all(keys[1:] > keys[:-1]))):
        # already in order, each chunk once (forks of consecutive regions, merged in order):
        # nothing to sort, nothing to compare
        cat.sorted_unique = True
        return cat
    order = np.argsort(keys, kind="stable")  # stable: rows of later tables stay later
    sk = keys[order]
    same_next = sk[1:] == sk[:-1]  # row i and i+1 (in sorted order) are the same chunk
    if policy == "fail" and same_next.any():
        a, b = order[:-1][same_next], order[1:][same_next]
        equal = (
            (cat.kinds[a] == cat.kinds[b])
            & np.all(cat.ids[a] == cat.ids[b], axis=1)
            & (cat.offsets[a] == cat.offsets[b])
            & (cat.lengths[a] == cat.lengths[b])
            # one location (url, etag, modified) has one index in a concatenation
            & (cat.url_idx[a] == cat.url_idx[b])
        )
        if cat.digests is not None:
            # two native writes of the same bytes (content digests recorded at write time)
            # are one write, whatever objects hold them
            da, db = cat.digests[a], cat.digests[b]
            equal |= ((cat.kinds[a] == KIND_NATIVE) & (cat.kinds[b] == KIND_NATIVE)
                      & (da == db) & (da != 0) & (cat.lengths[a] == cat.lengths[b]))
        inline = np.flatnonzero((cat.kinds[a] == 1) & (cat.kinds[b] == 1))
        for j in inline:  # offsets point into different blobs: compare the bytes
            equal[j] = cat.row_payload(int(a[j])) == cat.row_payload(int(b[j]))
        tomb = (cat.kinds[a] == KIND_TOMBSTONE) & (cat.kinds[b] == KIND_TOMBSTONE)
        bad = ~(equal | tomb)
        if bad.any():
            real = cat.coords[a[bad]]
            coords = sorted({tuple(int(v) for v in r) for r in real})
            raise MergeConflictError(
                f"two change-sets wrote the same chunk(s) of {path!r} with different bytes: "
                f"{_fmt_coords(coords[:20], len(coords))}. Concurrent forks must write "
                "disjoint chunks (or the same bytes); to let the later one win, merge with "
                'policy="last_wins"',
                path=path,
                chunk_coords=coords[:20],
            )
    last = np.ones(n, bool)
    last[:-1] = ~same_next  # keep the last row of each run of equal keys
    out = cat.take(order[last])
    out.sorted_unique = True
    return out


def _fmt_coords(coords: Sequence[tuple[int, ...]], total: int) -> str:
    shown = ", ".join(str(c) for c in coords[:10])
    return shown + ("" if total <= 10 else f" and {total - 10} more")
