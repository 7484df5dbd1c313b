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

from icechunk_dist.errors import MergeConflictError
from icechunk_dist.format import ChunkRefRecord, ChunkTable, NodeRecord, TableBuilder
from icechunk_dist.format.chunktable import KIND_TOMBSTONE, linear_keys

__all__ = ["ArrayChunks", "ChangeSet", "MergePolicy"]

MergePolicy = Literal["fail", "last_wins"]

# fold the per-chunk builder into the columnar table past this many rows
_FOLD_AT = 65_536


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
        self._table = table if table is not None else ChunkTable.empty(ndim)
        self._builder = TableBuilder(ndim)
        self._pos: dict[tuple[int, ...], int] = {}
        # normalized tables of disjoint, increasing coordinate ranges whose concatenation is
        # the table (a merge's result, concatenated when first needed); set only with no
        # ``table`` and no builder rows
        self._parts: list[ChunkTable] | None = list(parts) if parts else None

    def __len__(self) -> int:
        if self._parts is not None and not len(self._builder):
            return sum(len(p) for p in self._parts)
        return len(self.table)

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

    def set_native(self, coord: tuple[int, ...], chunk_id: bytes, length: int) -> None:
        self._builder.add_native(coord, chunk_id, length)
        self._note(coord)

    def set_inline(self, coord: tuple[int, ...], data: bytes) -> None:
        self._builder.add_inline(coord, data)
        self._note(coord)

    def set_virtual(self, coord: tuple[int, ...], url: str, offset: int, length: int,
                    etag: str | None) -> None:
        self._builder.add_virtual(coord, url, offset, length, etag)
        self._note(coord)

    def delete(self, coord: tuple[int, ...]) -> None:
        self._builder.add_tombstone(coord)
        self._note(coord)

    def fold(self) -> None:
        self._materialize()
        if len(self._builder):
            self._table = ChunkTable.concat([self._table, self._builder.build()]).normalized()
            self._builder = TableBuilder(self.ndim)
            self._pos = {}

    @property
    def table(self) -> ChunkTable:
        """The normalized table of every write (tombstones included)."""
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
        self._table = table
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
        for cs in (self, *(o for o, _ in others)):
            names.update({r.node_id: p for p, r in cs.deleted.items()})
            names.update(cs.node_paths_by_id())
        fold = _MetadataFold(self, policy, names)
        for i, (other, ancestor) in enumerate(others, 1):
            fold.add(i, other, ancestor)
        out, dead = fold.out, fold.dead()
        per_node: dict[str, list[ChunkTable]] = {}
        ndims: dict[str, int] = {}
        for i, cs in enumerate((self, *(o for o, _ in others))):
            for nid, ac in cs.chunks.items():
                key = fold.resolve(nid)
                if key in dead or i <= fold.floor.get(key, -1):
                    continue  # the node is gone, or a later delete won over these writes
                per_node.setdefault(key, []).append(ac.table)
                ndims[key] = ac.ndim
        for nid in sorted(per_node):
            tables = per_node[nid]
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


# ---------------------------------------------------------------------- metadata merge
# A change-set's effect on one node path: ("set", record) or ("del", deleted base record)
Effect = tuple[Literal["set", "del"], NodeRecord] | None
_MISSING = object()


def node_effect(cs: ChangeSet | None, path: str) -> Effect:
    """What ``cs`` does to the node at ``path`` (None: nothing)."""
    if cs is None:
        return None
    rec = cs.nodes.get(path)
    if rec is not None:
        return ("set", rec)
    rec = cs.deleted.get(path)
    return None if rec is None else ("del", rec)


def _same(a: Effect, b: Effect) -> bool:
    if a is None or b is None:
        return a is b
    return (a[0] == b[0] and a[1].node_id == b[1].node_id
            and (a[0] == "del" or a[1].metadata == b[1].metadata))


def removes_node(cs: ChangeSet, path: str) -> bool:
    """True if ``cs`` deletes the node at ``path`` it started from (or replaces it)."""
    old = cs.deleted.get(path)
    if old is None:
        return False
    cur = cs.nodes.get(path)
    return cur is None or cur.node_id != old.node_id


def parent_paths(path: str) -> list[str]:
    """The proper ancestors of a node path or key, nearest first (``""`` is the root)."""
    parts = path.split("/") if path else []
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]


def is_inside(path: str, group: str) -> bool:
    """True if node path (or key) ``path`` lies strictly inside node path ``group``."""
    return path != group and (group == "" or path.startswith(group + "/"))


def _moved(cs: ChangeSet, anc: ChangeSet | None, path: str) -> Effect:
    """``cs``'s effect at ``path``, or None if it is what ``anc`` holds there (no change)."""
    eff = node_effect(cs, path)
    return None if eff is None or _same(eff, node_effect(anc, path)) else eff


def _gone_since(x: ChangeSet, anc: ChangeSet | None, path: str) -> bool:
    """True if the node ``anc`` shows at ``path`` (the base's, if ``anc`` does not touch
    it) is deleted or replaced in ``x``."""
    seen = anc.nodes.get(path) if anc is not None else None
    if seen is not None:
        # ``x`` may be a change-set on top of ``anc`` (not holding its nodes) or one that
        # holds them (the session): only a record of ``x`` says the node went
        now = x.nodes.get(path)
        return path in x.deleted if now is None else now.node_id != seen.node_id
    if anc is not None and path in anc.deleted:
        return False  # there was no node to see
    return removes_node(x, path)


def _key_moved(cs: ChangeSet, anc: ChangeSet | None, key: str) -> bool:
    """True if ``cs`` wrote (or deleted) ``key`` differently from ``anc``."""
    ref = cs.loose.get(key, _MISSING)
    return ref is not _MISSING and ref != (anc.loose.get(key, _MISSING) if anc else _MISSING)


def _inside_message(group: str, path: str) -> str:
    return (f"one change-set deleted group {group!r} while another changed {path!r} "
            "inside it")


class _MetadataFold:
    """Folds change-sets' node, key and hierarchy changes, in order, into :attr:`out`.

    Conflicts are detected pairwise between what was folded so far (``X``) and the next
    change-set (``Y``), with the same symmetric rules whichever comes first. ``floor``,
    ``alias`` and :meth:`dead` tell :meth:`ChangeSet.merge_many` which chunk writes survive.
    """

    def __init__(self, first: ChangeSet, policy: MergePolicy, names: dict[str, str]) -> None:
        self.out = ChangeSet(nodes=dict(first.nodes), new_paths=set(first.new_paths),
                             deleted=dict(first.deleted), loose=dict(first.loose))
        self.policy = policy
        self.names = names
        self.writers: dict[str, list[int]] = {}  # node id -> change-sets that wrote chunks
        self.floor: dict[str, int] = {}  # node id -> a winning delete: drop writes up to it
        self.alias: dict[str, str] = {}  # adopted node id -> the id it merged into
        self.killed: set[str] = set()  # ids of nodes taken out of ``out.nodes``
        self._note_chunks(0, self._written(first))

    def resolve(self, nid: str) -> str:
        while nid in self.alias:
            nid = self.alias[nid]
        return nid

    def dead(self) -> set[str]:
        """Ids of nodes the merged change-set deletes: their chunk writes are dropped."""
        out = self.out
        gone = {r.node_id for p, r in out.deleted.items() if removes_node(out, p)}
        return (gone | self.killed) - {r.node_id for r in out.nodes.values()}

    def _written(self, cs: ChangeSet) -> set[str]:
        return {self.resolve(n) for n, ac in cs.chunks.items() if len(ac)}

    def _note_chunks(self, i: int, ids: set[str]) -> None:
        for nid in ids:
            self.writers.setdefault(nid, []).append(i)

    def _wrote(self, nid: str) -> bool:
        """True if a change-set folded so far wrote chunks of ``nid`` that still count."""
        floor = self.floor.get(nid, -1)
        return any(j > floor for j in self.writers.get(nid, ()))

    def _conflict(self, found: list[tuple[str, str]], path: str, message: str) -> None:
        if self.policy == "fail":
            found.append((path, message))

    # ------------------------------------------------------------------ one change-set
    def add(self, i: int, y: ChangeSet, anc: ChangeSet | None) -> None:
        """Fold change-set number ``i`` (``y``, made on top of ``anc``) into :attr:`out`."""
        x = self.out
        found: list[tuple[str, str]] = []
        # nodes both touched: identical, one on top of the other's ancestor, or a conflict
        theirs: list[str] = []
        adopt: list[str] = []
        contested: set[str] = set()  # paths of conflicts ("last_wins": ``y`` wins them)
        for p in sorted(set(y.nodes) | set(y.deleted)):
            m, t, a = node_effect(x, p), node_effect(y, p), node_effect(anc, p)
            if m is None or _same(m, t) or _same(m, a):
                theirs.append(p)
            elif _same(t, a):
                continue
            elif self._identical_creations(x, y, p):
                adopt.append(p)
            else:
                assert t is not None
                self._conflict(found, p, (
                    f"one change-set deleted {p!r} while another changed it"
                    if "del" in (m[0], t[0]) else
                    f"both change-sets changed the metadata of {p!r} differently"))
                theirs.append(p)
                contested.add(p)
        # keys
        keys: list[str] = []
        for k, ref in sorted(y.loose.items()):
            mine = x.loose.get(k, _MISSING)
            base = anc.loose.get(k, _MISSING) if anc is not None else _MISSING
            if mine is _MISSING or mine in (ref, base):
                keys.append(k)
            elif ref != base:
                self._conflict(found, k, f"both change-sets wrote key {k!r}")
                keys.append(k)
                contested.add(k)
        # chunks of a node the other side deletes (or replaces)
        y_gone = {y.deleted[p].node_id: p for p in y.deleted if removes_node(y, p)}
        x_gone = {x.deleted[p].node_id: p for p in x.deleted if removes_node(x, p)}
        y_writes = self._written(y)
        floors: list[str] = []
        for nid, p in sorted(y_gone.items()):
            if self._wrote(nid):
                self._conflict(found, p, f"one change-set deleted {p!r} while another "
                               "wrote chunks of it")
                floors.append(nid)
        restore = sorted(x_gone[n] for n in y_writes if n in x_gone)
        contested.update(restore)
        for p in restore:
            self._conflict(found, p, f"one change-set deleted {p!r} while another wrote "
                           "chunks of it")
        # the hierarchy: a group one side deletes (or replaces), and what the other changes
        # inside it. A node or key both changed is left to the rules above; a conflict names
        # the nearest group
        y_paths = {self.names[n] for n in y_writes if n in self.names}
        winners = set(contested)
        if x.deleted:
            touched = {*(q for q in y.nodes if _moved(y, anc, q) is not None), *y_paths,
                       *(k for k, v in y.loose.items() if v is not None
                         and _key_moved(y, anc, k))}
            for q in sorted(touched):
                if _moved(x, anc, q) is not None or _key_moved(x, anc, q):
                    continue
                g = next((g for g in parent_paths(q) if _moved(y, anc, g) is None
                          and _gone_since(x, anc, g)), None)
                if g is not None:
                    self._conflict(found, g, _inside_message(g, q))
                    winners.add(q)
        applied = set(theirs)
        emptied = {g for g in y.deleted if g in applied and removes_node(y, g)
                   and y.deleted[g].kind == "group"}
        if emptied:
            for g, q in self._changed_inside(emptied, y, anc):
                self._conflict(found, g, _inside_message(g, q))
        if found:
            path, message = min(found)
            raise MergeConflictError(message, path=path)
        # apply (under "last_wins" every conflict above goes to ``y``)
        for p in theirs:
            self._apply(p, node_effect(y, p), y)
        for p in adopt:
            self._adopt(p, x.nodes[p], y.nodes[p])
        for k in keys:
            x.loose[k] = y.loose[k]
        for nid in floors:
            self.floor[nid] = i
        for p in restore:
            self._restore(p)
        for g in sorted(emptied):
            self._empty(g, y, anc, i)
        # what ``y`` won ("last_wins") needs its groups: undo deletes on the way to it
        for q in sorted(winners):
            if q in y.nodes or y.loose.get(q) is not None or q in y_paths:
                for g in parent_paths(q):
                    if removes_node(x, g) and not removes_node(y, g):
                        self._restore(g)
        self._note_chunks(i, y_writes)

    def _identical_creations(self, x: ChangeSet, y: ChangeSet, p: str) -> bool:
        """Both created a node at ``p`` (on the same base) with the same kind and document."""
        a, b = x.nodes.get(p), y.nodes.get(p)
        if a is None or b is None or a.node_id == b.node_id:
            return False
        old_a, old_b = x.deleted.get(p), y.deleted.get(p)
        return (p in x.new_paths and p in y.new_paths and a.kind == b.kind
                and a.metadata == b.metadata
                and (old_a is None) == (old_b is None)
                and (old_a is None or old_b is None or old_a.node_id == old_b.node_id))

    def _changed_inside(self, groups: set[str], y: ChangeSet, anc: ChangeSet | None
                        ) -> list[tuple[str, str]]:
        """(group, path): what the folded change-sets changed inside ``groups`` (that ``y``
        deletes), other than what ``y`` saw in its ancestor or itself changed too, with the
        nearest of those groups that they did not change themselves."""
        x = self.out

        def group_of(q: str) -> str | None:
            if _moved(y, anc, q) is not None or _key_moved(y, anc, q):
                return None
            return next((g for g in parent_paths(q)
                         if g in groups and _moved(x, anc, g) is None), None)

        changed = [q for q in x.nodes if _moved(x, anc, q) is not None]
        changed += [k for k, v in x.loose.items() if v is not None and _key_moved(x, anc, k)]
        changed += [self.names[n] for n in self.writers if n in self.names and self._wrote(n)]
        return sorted({(g, q) for q in changed if (g := group_of(q)) is not None})

    # ------------------------------------------------------------------ applying
    def _apply(self, p: str, eff: Effect, y: ChangeSet) -> None:
        x = self.out
        assert eff is not None
        kind, rec = eff
        old = x.nodes.get(p)
        if kind == "del":
            if old is not None:
                del x.nodes[p]
                self.killed.add(old.node_id)
            x.deleted.setdefault(p, rec)
            x.new_paths.discard(p)
            return
        if old is not None and old.node_id != rec.node_id:
            self.killed.add(old.node_id)
        x.nodes[p] = rec
        self.killed.discard(rec.node_id)
        if p in y.deleted:
            x.deleted.setdefault(p, y.deleted[p])
        elif p in x.deleted and x.deleted[p].node_id == rec.node_id:
            del x.deleted[p]  # the node it deleted is kept after all
        if p in y.new_paths:
            x.new_paths.add(p)

    def _adopt(self, p: str, mine: NodeRecord, theirs: NodeRecord) -> None:
        """One node for two identical creations: the smaller id, in any order."""
        keep, drop = sorted((mine, theirs), key=lambda r: r.node_id)
        self.out.nodes[p] = keep
        self.alias[drop.node_id] = keep.node_id
        moved = self.writers.pop(drop.node_id, [])
        if moved:
            self.writers.setdefault(keep.node_id, []).extend(moved)

    def _restore(self, p: str) -> None:
        """Undo the folded change-sets' delete (or replacement) of the node at ``p``."""
        x = self.out
        old = x.deleted.pop(p, None)
        cur = x.nodes.get(p)
        if old is not None and cur is not None and cur.node_id != old.node_id:
            del x.nodes[p]
            self.killed.add(cur.node_id)
            x.new_paths.discard(p)

    def _empty(self, g: str, y: ChangeSet, anc: ChangeSet | None, i: int) -> None:
        """``y`` deleted group ``g``: the folded nodes, keys and chunks inside it go too,
        but for what ``y`` itself changed there."""
        x = self.out
        for q in [q for q in x.nodes if is_inside(q, g) and _moved(y, anc, q) is None]:
            rec = x.nodes.pop(q)
            self.killed.add(rec.node_id)
            if q not in x.new_paths and q not in x.deleted:
                x.deleted[q] = rec  # a node of the base: deleting it is a change
            x.new_paths.discard(q)
        for k in [k for k, v in x.loose.items() if v is not None and is_inside(k, g)]:
            if not _key_moved(y, anc, k):
                x.loose[k] = None
        for nid in self.writers:
            if nid in self.names and is_inside(self.names[nid], g):
                self.floor[nid] = i


def _disjoint_parts(tables: Sequence[ChunkTable]) -> list[ChunkTable] | None:
    """``tables`` (their non-empty ones) ordered by coordinates, if each is sorted without
    duplicates and no two cover overlapping coordinate ranges; else None.

    Then no chunk is written twice and the ordered concatenation is the normalized merge:
    forks of disjoint regions (the distributed write) merge without sorting or copying a
    row. Only the first and last row of each table are compared (tables are normalized
    after a fold); a table not marked normalized is checked with one vectorized pass over
    all of them.
    """
    parts = [t for t in tables if len(t)]
    if len(parts) < 2:
        return parts or None
    ndim = parts[0].ndim
    if any(t.ndim != ndim for t in parts):
        return None
    unchecked = [t for t in parts if not t.sorted_unique]
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
    ends = np.concatenate([e for t in parts for e in (t.coords[:1], t.coords[-1:])])
    lin = linear_keys([ends])
    if lin is None:
        return None
    k = lin[0].reshape(len(parts), 2)
    order = np.argsort(k[:, 0], kind="stable")
    first, last = k[order, 0], k[order, 1]
    if not bool(np.all(first[1:] > last[:-1])):
        return None
    return [parts[int(i)] for i in order]


def _merge_tables(tables: Sequence[ChunkTable], policy: MergePolicy, path: str) -> ChunkTable:
    """Concatenate normalized tables (later wins), refusing different writes of one chunk."""
    cat = ChunkTable.concat(list(tables))
    n = len(cat)
    if n == 0:
        return cat.normalized()
    lin = linear_keys([cat.coords])
    keys: npt.NDArray[Any] = lin[0] if lin is not None else cat.keys()
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
        )
        inline = np.flatnonzero((cat.kinds[a] == 1) & (cat.kinds[b] == 1))
        for j in inline:  # offsets point into different blobs: compare the bytes
            equal[j] = cat.row_payload(int(a[j])) == cat.row_payload(int(b[j]))
        tomb = (cat.kinds[a] == KIND_TOMBSTONE) & (cat.kinds[b] == KIND_TOMBSTONE)
        bad = ~(equal | tomb)
        if bad.any():
            real = cat.coords[a[bad]]
            coords = sorted({tuple(int(v) for v in r) for r in real})
            raise MergeConflictError(
                f"two change-sets wrote the same chunk(s) of {path!r}: "
                f"{_fmt_coords(coords[:20], len(coords))}",
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
