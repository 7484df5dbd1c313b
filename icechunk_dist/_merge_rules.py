"""The merge rules of change-sets for node metadata, keys and the hierarchy (pure: no I/O).

:meth:`icechunk_dist.changeset.ChangeSet.merge_many` folds change-sets with
:class:`MetadataFold`, then merges their chunk tables with what the fold says survives.
The rules are symmetric, so a merge does not depend on the order of its change-sets
(docs/design/009-order-independent-merge.md). The rebase (``icechunk_dist.conflicts``)
shares the path helpers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from typing import Literal, Protocol

from icechunk_dist.errors import MergeConflictError
from icechunk_dist.format import ChunkRefRecord, NodeRecord

__all__ = [
    "Changes",
    "Effect",
    "MetadataFold",
    "is_inside",
    "node_effect",
    "parent_paths",
    "removes_node",
]


class Changes(Protocol):
    """What the rules read of a change-set (``ChangeSet`` is one); ``MetadataFold.out`` is
    also written to."""

    nodes: dict[str, NodeRecord]
    new_paths: set[str]
    deleted: dict[str, NodeRecord]
    loose: dict[str, ChunkRefRecord | None]

    @property
    def chunks(self) -> Mapping[str, Sized]: ...


# A change-set's effect on one node path: ("set", record) or ("del", deleted base record)
Effect = tuple[Literal["set", "del"], NodeRecord] | None
_MISSING = object()


def node_effect(cs: Changes | None, path: str) -> Effect:
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


def removes_node(cs: Changes, path: str) -> bool:
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


def _moved(cs: Changes, anc: Changes | None, path: str) -> Effect:
    """``cs``'s effect at ``path``, or None if it is what ``anc`` holds there (no change)."""
    eff = node_effect(cs, path)
    return None if eff is None or _same(eff, node_effect(anc, path)) else eff


def _gone_since(x: Changes, anc: Changes | None, path: str) -> bool:
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


def _key_moved(cs: Changes, anc: Changes | None, key: str) -> bool:
    """True if ``cs`` wrote (or deleted) ``key`` differently from ``anc``."""
    ref = cs.loose.get(key, _MISSING)
    return ref is not _MISSING and ref != (anc.loose.get(key, _MISSING) if anc else _MISSING)


def _inside_message(group: str, path: str) -> str:
    return (f"one change-set deleted group {group!r} while another changed {path!r} "
            "inside it")


class MetadataFold:
    """Folds change-sets' node, key and hierarchy changes, in order, into :attr:`out`.

    Conflicts are detected pairwise between what was folded so far (``X``) and the next
    change-set (``Y``), with the same symmetric rules whichever comes first. ``floor``,
    ``alias`` and :meth:`dead` tell ``ChangeSet.merge_many`` which chunk writes survive.
    """

    def __init__(self, first: Changes, out: Changes, policy: Literal["fail", "last_wins"],
                 names: dict[str, str]) -> None:
        self.out = out  # starts as a copy of ``first``'s metadata
        self.policy = policy
        self.names = names
        self.writers: dict[str, list[int]] = {}  # node id -> change-sets that wrote chunks
        self.floor: dict[str, int] = {}  # node id -> a winning delete: drop writes up to it
        self.alias: dict[str, str] = {}  # adopted node id -> the id it merged into
        self.killed: set[str] = set()  # ids of nodes taken out of ``out.nodes``
        # path -> (record, created by the folded change-sets) of a node a delete took out of
        # ``out.nodes``: what undoing that delete puts back (a group the session created
        # exists nowhere else, not in the base)
        self.removed: dict[str, tuple[NodeRecord, bool]] = {}
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

    def _written(self, cs: Changes) -> set[str]:
        if not self.alias:  # no adopted nodes: every id is its own
            return {n for n, ac in cs.chunks.items() if ac}
        return {self.resolve(n) for n, ac in cs.chunks.items() if ac}

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
    def add_all(self, others: Sequence[tuple[Changes, Changes | None]]) -> None:
        """Fold change-sets numbered from 1 (each with its ancestor), in order: :meth:`add`
        on each, with its first case (chunk writes only) inlined, as a distributed write's
        thousands of forks all are."""
        writers = self.writers
        x = self.out
        slow = bool(x.deleted or self.alias)  # changes only in ``add``
        for i, (y, anc) in enumerate(others, 1):
            if slow or y.nodes or y.deleted or y.loose:
                self.add(i, y, anc)
                slow = bool(x.deleted or self.alias)
                continue
            for nid, ac in y.chunks.items():
                if ac:
                    w = writers.get(nid)
                    if w is None:
                        writers[nid] = [i]
                    else:
                        w.append(i)

    def add(self, i: int, y: Changes, anc: Changes | None) -> None:
        """Fold change-set number ``i`` (``y``, made on top of ``anc``) into :attr:`out`."""
        x = self.out
        if not (y.nodes or y.deleted or y.loose or x.deleted):
            # chunk writes only, and nothing deleted so far: none of the rules below can
            # apply (the common case of a distributed write's forks)
            self._note_chunks(i, self._written(y))
            return
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

    def _identical_creations(self, x: Changes, y: Changes, p: str) -> bool:
        """Both created a node at ``p`` (on the same base) with the same kind and document."""
        a, b = x.nodes.get(p), y.nodes.get(p)
        if a is None or b is None or a.node_id == b.node_id:
            return False
        old_a, old_b = x.deleted.get(p), y.deleted.get(p)
        return (p in x.new_paths and p in y.new_paths and a.kind == b.kind
                and a.metadata == b.metadata
                and (old_a is None) == (old_b is None)
                and (old_a is None or old_b is None or old_a.node_id == old_b.node_id))

    def _changed_inside(self, groups: set[str], y: Changes, anc: Changes | None
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
    def _apply(self, p: str, eff: Effect, y: Changes) -> None:
        x = self.out
        assert eff is not None
        kind, rec = eff
        old = x.nodes.get(p)
        if kind == "del":
            if old is not None:
                del x.nodes[p]
                self.killed.add(old.node_id)
                self.removed[p] = (old, p in x.new_paths)
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
        elif cur is None and p in self.removed:
            # the delete took out a node of the folded change-sets (created or changed by
            # them): put it back, the base alone would not have it
            rec, created = self.removed.pop(p)
            x.nodes[p] = rec
            self.killed.discard(rec.node_id)
            if created:
                x.new_paths.add(p)

    def _empty(self, g: str, y: Changes, anc: Changes | None, i: int) -> None:
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
