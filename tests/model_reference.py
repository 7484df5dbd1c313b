"""The reference model of tests/test_model.py: what icechunk_dist promises, in plain Python.

No icechunk_dist import here. A repository is modelled as snapshots holding a node tree (path
-> node) and every chunk's value, branches and tags pointing at snapshots, and the objects a
garbage collection can delete (snapshot objects, transaction logs, manifests, chunk objects),
each with the *epoch* it was written in: the test separates epochs by clock ticks, so that a
cut-off "epoch k" means "written before tick k" on every backend.

Semantics come from the documentation, not from the code:

- session writes, ``status()`` and transaction logs: docs/api.md, docs/concurrency.md
  ("Seeing what changed"): a log lists new, deleted and updated nodes and every chunk written
  or deleted, for nodes that still exist;
- rebase: the conflict table and the solvers of docs/concurrency.md; our delete of a group
  removes the group *and everything under it* (a valid Zarr hierarchy, nothing orphaned);
- amend (``Session.amend`` docstring): the tip's content plus ours, parent = the tip's
  parent; history that expiry cut stays cut (a rebase must refuse to cross it);
- fork merge (``Session.merge`` and ``MergeConflictError`` docstrings): two different writes
  of one chunk, two different metadata documents of one node, or one side deleting a node
  the other changed, conflict; the result does not depend on the order of the forks;
- expiry and garbage collection: docs/maintenance.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

CHUNK = {"A": 2, "B": 3}  # chunk length of the two array layouts (1-D, int32, fill 0)
START = {"A": 4, "B": 2}  # chunks of a new array
MAX_CHUNKS = 6
FUTURE = 10**9  # a cut-off later than every write (an epoch no write has)


class ModelConflict(Exception):
    """The model's rebase failed: ``kind`` is "rebase" (with ``conflicts``) or "history"."""

    def __init__(self, kind: str, conflicts: Iterable[MConflict] = ()) -> None:
        super().__init__(kind)
        self.kind = kind
        self.conflicts = list(conflicts)


@dataclass(frozen=True)
class Node:
    """A group or a 1-D array. ``nid`` is the node's identity (it survives attribute changes,
    appends and moves; a node deleted and created again is a new node)."""

    nid: int
    kind: str
    attrs: tuple[tuple[str, int], ...] = ()
    spec: str | None = None
    nchunks: int = 0

    @property
    def meta(self) -> tuple[object, ...]:
        """Everything its ``zarr.json`` says."""
        return (self.kind, self.attrs, self.spec, self.nchunks)

    @property
    def is_array(self) -> bool:
        return self.kind == "array"


@dataclass(frozen=True)
class Tree:
    """Nodes by path ("" is the root) and, per live array node id, chunk -> write id."""

    nodes: dict[str, Node]
    chunks: dict[int, dict[int, int]]

    def live_nids(self) -> dict[int, str]:
        return {n.nid: p for p, n in self.nodes.items()}

    def wids(self) -> set[int]:
        return {w for c in self.chunks.values() for w in c.values()}


EMPTY = Tree({}, {})


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def ancestors(path: str) -> list[str]:
    out = []
    while path:
        path = parent_of(path)
        out.append(path)
    return out


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def valid_hierarchy(tree: Tree) -> bool:
    """Every node's parent exists and is a group."""
    for p in tree.nodes:
        if p and (parent_of(p) not in tree.nodes or tree.nodes[parent_of(p)].is_array):
            return False
    return True


# ------------------------------------------------------------------------------ change-sets
@dataclass
class Changes:
    """A session's (or fork's) pending changes relative to its base tree."""

    nodes: dict[str, Node] = field(default_factory=dict)  # created or changed, current
    deleted: dict[str, Node] = field(default_factory=dict)  # base nodes gone
    chunks: dict[int, dict[int, int | None]] = field(default_factory=dict)  # None: deleted

    def copy(self) -> Changes:
        return Changes(dict(self.nodes), dict(self.deleted),
                       {k: dict(v) for k, v in self.chunks.items()})

    def is_empty(self) -> bool:
        return not (self.nodes or self.deleted or any(self.chunks.values()))

    def wids(self, alive: Iterable[int] | None = None) -> set[int]:
        keep = None if alive is None else set(alive)
        return {w for nid, c in self.chunks.items() if keep is None or nid in keep
                for w in c.values() if w is not None}


def view(base: Tree, ch: Changes) -> Tree:
    nodes = {p: n for p, n in base.nodes.items() if p not in ch.deleted}
    nodes.update(ch.nodes)
    base_nids = {n.nid for n in base.nodes.values()}
    chunks: dict[int, dict[int, int]] = {}
    for n in nodes.values():
        if not n.is_array:
            continue
        c = dict(base.chunks.get(n.nid, {})) if n.nid in base_nids else {}
        for coord, w in ch.chunks.get(n.nid, {}).items():
            if w is None:
                c.pop(coord, None)
            else:
                c[coord] = w
        chunks[n.nid] = c
    return Tree(nodes, chunks)


def view_node(base: Tree, ch: Changes, path: str) -> Node | None:
    if path in ch.nodes:
        return ch.nodes[path]
    if path in ch.deleted:
        return None
    return base.nodes.get(path)


def delete_one(base: Tree, ch: Changes, path: str) -> None:
    rec = ch.nodes.pop(path, None)
    if rec is not None:
        ch.chunks.pop(rec.nid, None)
    b = base.nodes.get(path)
    if b is not None:
        ch.deleted[path] = b
        ch.chunks.pop(b.nid, None)


def delete_subtree(base: Tree, ch: Changes, path: str) -> None:
    for p in [q for q in view(base, ch).nodes if under(q, path)]:
        delete_one(base, ch, p)


def set_node(base: Tree, ch: Changes, path: str, node: Node) -> None:
    cur = view_node(base, ch, path)
    if cur is not None and cur.nid != node.nid:
        delete_one(base, ch, path)
    ch.nodes[path] = node


def write_chunk(ch: Changes, nid: int, coord: int, wid: int | None) -> None:
    ch.chunks.setdefault(nid, {})[coord] = wid


def changes_between(base: Tree, result: Tree, writes: dict[int, dict[int, int | None]]
                    ) -> Changes:
    """The change-set that turns ``base`` into ``result`` (node records), with ``writes``."""
    out = Changes(chunks={k: dict(v) for k, v in writes.items()})
    for p, n in result.nodes.items():
        if base.nodes.get(p) != n:
            out.nodes[p] = n
    for p, b in base.nodes.items():
        r = result.nodes.get(p)
        if r is None or r.nid != b.nid:
            out.deleted[p] = b
    return out


# ------------------------------------------------------------------------------ logs
@dataclass(frozen=True)
class Log:
    """What one commit changed relative to its parent (its transaction log)."""

    new: dict[str, str]
    deleted: dict[str, str]
    updated: dict[str, str]
    extended: frozenset[str]
    chunks: dict[str, tuple[int, frozenset[int]]]  # path -> (node id, coords written)


def make_log(parent: Tree, child: Tree, writes: dict[int, Iterable[int]]) -> Log:
    new: dict[str, str] = {}
    deleted: dict[str, str] = {}
    updated: dict[str, str] = {}
    extended: set[str] = set()
    for p in set(parent.nodes) | set(child.nodes):
        a, b = parent.nodes.get(p), child.nodes.get(p)
        if a is not None and b is not None and a.nid == b.nid:
            if a.meta != b.meta:
                updated[p] = b.kind
                if (b.is_array and a.attrs == b.attrs and a.spec == b.spec
                        and b.nchunks > a.nchunks):
                    extended.add(p)
            continue
        if a is not None:
            deleted[p] = a.kind
        if b is not None:
            new[p] = b.kind
    where = child.live_nids()
    chunks = {where[nid]: (nid, frozenset(cs)) for nid, cs in writes.items()
              if nid in where and cs}
    return Log(new, deleted, updated, frozenset(extended), chunks)


def log_of(base: Tree, ch: Changes) -> Log:
    return make_log(base, view(base, ch), {k: set(v) for k, v in ch.chunks.items()})


def diff_of(log: Log) -> dict[str, object]:
    """``log`` as the fields of icechunk_dist's ``Diff`` (public paths)."""

    def pub(paths: Iterable[str]) -> set[str]:
        return {"/" + p for p in paths}

    return {
        "new_groups": pub(p for p, k in log.new.items() if k == "group"),
        "new_arrays": pub(p for p, k in log.new.items() if k == "array"),
        "deleted_groups": pub(p for p, k in log.deleted.items() if k == "group"),
        "deleted_arrays": pub(p for p, k in log.deleted.items() if k == "array"),
        "updated_groups": pub(p for p, k in log.updated.items() if k == "group"),
        "updated_arrays": pub(p for p, k in log.updated.items() if k == "array"),
        "updated_chunks": {"/" + p: sorted([c] for c in cs)
                           for p, (_, cs) in log.chunks.items()},
    }


# ------------------------------------------------------------------------------ rebase
@dataclass(frozen=True)
class MConflict:
    type: str  # a ConflictType name
    path: str  # public path
    chunks: frozenset[int] | None = None


def choose(solver: str, c: MConflict) -> str:
    """docs/concurrency.md "Solvers": "fail", "ours" or "theirs"."""
    if solver == "detector":
        return "fail"
    if c.type == "ChunkDoubleUpdate":
        return "theirs" if solver == "theirs" else "ours"
    if c.type in ("DeleteOfUpdatedArray", "DeleteOfUpdatedGroup"):
        return "ours"
    return "fail"


def detect(base: Tree, ours: Changes, logs: list[Log]) -> list[MConflict]:
    """The conflict table of docs/concurrency.md, one landed commit at a time."""
    out: list[MConflict] = []
    for log in logs:
        del_arr = {p for p, k in log.deleted.items() if k == "array"}
        del_grp = {p for p, k in log.deleted.items() if k == "group"}
        upd = set(log.updated)
        upd_arr = {p for p, k in log.updated.items() if k == "array"}
        for p in sorted(ours.nodes):
            rec, old = ours.nodes[p], base.nodes.get(p)
            if old is None or old.nid != rec.nid:
                if p in log.new:
                    out.append(MConflict("NewNodeConflictsWithExistingNode", "/" + p))
                elif any(a in del_grp for a in ancestors(p)):
                    out.append(MConflict("NewNodeInInvalidGroup", "/" + p))
                continue
            if p in del_arr:
                out.append(MConflict("ZarrMetadataUpdateOfDeletedArray", "/" + p))
            elif p in del_grp:
                out.append(MConflict("ZarrMetadataUpdateOfDeletedGroup", "/" + p))
            elif p in upd or p in log.new:
                out.append(MConflict("ZarrMetadataDoubleUpdate", "/" + p))
        where = {n.nid: p for p, n in base.nodes.items()}
        for nid in sorted(ours.chunks):
            mine = frozenset(ours.chunks[nid])
            p = where.get(nid)
            if not mine or p is None:
                continue  # chunks of a node we created go with the node
            if p in del_arr or p in log.new:
                out.append(MConflict("ChunksUpdatedInDeletedArray", "/" + p, mine))
                continue
            if p in upd_arr and p not in log.extended:
                out.append(MConflict("ChunksUpdatedInUpdatedArray", "/" + p, mine))
            theirs = log.chunks.get(p)
            if theirs is not None and theirs[0] == nid and mine & theirs[1]:
                out.append(MConflict("ChunkDoubleUpdate", "/" + p, mine & theirs[1]))
        touched = set(log.new) | upd | set(log.chunks)
        for p in sorted(ours.deleted):
            rec = ours.deleted[p]
            hit = p in touched
            if not hit and not rec.is_array:  # changes inside a group we delete
                hit = any(under(q, p) for q in touched)
            if hit:
                out.append(MConflict("DeleteOfUpdatedArray" if rec.is_array
                                     else "DeleteOfUpdatedGroup", "/" + p))
    return out


def rebase(base: Tree, ch: Changes, tip: Tree, logs: list[Log], solver: str
           ) -> tuple[Tree, Changes]:
    """Our changes replayed on ``tip`` (the result and the change-set relative to the tip).

    Raises
    ------
    ModelConflict
        ("rebase") with the conflicts the solver does not resolve.
    """
    ours = ch.copy()
    conflicts: list[MConflict] = []
    # "create if missing": a node both created with the same zarr.json is theirs, with our
    # chunk writes moved onto it
    for p in sorted(ch.nodes):
        rec, old, theirs = ch.nodes[p], base.nodes.get(p), tip.nodes.get(p)
        if theirs is None or theirs.nid == rec.nid or p in ch.deleted:
            continue
        if old is not None or theirs.meta != rec.meta:
            continue
        del ours.nodes[p]
        mine = ours.chunks.pop(rec.nid, None)
        if not mine:
            continue
        ours.chunks[theirs.nid] = mine
        written = {c for log in logs for nid, cs in log.chunks.values()
                   if nid == theirs.nid for c in cs}
        both = frozenset(mine) & written
        if both:
            conflicts.append(MConflict("ChunkDoubleUpdate", "/" + p, both))
    conflicts += detect(base, ours, logs)
    failed = [c for c in conflicts if choose(solver, c) == "fail"]
    if failed:
        raise ModelConflict("rebase", failed)
    for c in conflicts:
        if c.type == "ChunkDoubleUpdate" and choose(solver, c) == "theirs":
            mine_w = ours.chunks.get(tip.nodes[c.path[1:]].nid, {})
            for coord in c.chunks or ():
                mine_w.pop(coord, None)
    nodes = dict(tip.nodes)
    for p in ours.deleted:  # our delete wins: the node and all under it
        for q in [q for q in nodes if under(q, p)]:
            del nodes[q]
    nodes.update(ours.nodes)
    alive = {n.nid for n in nodes.values()}
    writes = {nid: w for nid, w in ours.chunks.items() if nid in alive}
    result = apply_chunks(tip, nodes, writes)
    return result, changes_between(tip, result, writes)


def apply_chunks(start: Tree, nodes: dict[str, Node],
                 writes: dict[int, dict[int, int | None]]) -> Tree:
    """``nodes`` with the chunks ``start`` has for the same node ids, then ``writes``."""
    chunks: dict[int, dict[int, int]] = {}
    for n in nodes.values():
        if not n.is_array:
            continue
        c = dict(start.chunks.get(n.nid, {}))
        for coord, w in writes.get(n.nid, {}).items():
            if w is None:
                c.pop(coord, None)
            else:
                c[coord] = w
        chunks[n.nid] = c
    return Tree(dict(nodes), chunks)


# ------------------------------------------------------------------------------ fork merge
def merge(base: Tree, session: Changes, forks: list[tuple[Changes, Changes]]
          ) -> tuple[str, Changes | None]:
    """Merge forks (each: inherited metadata, own changes) into the session's changes.

    Returns ("conflict", None), ("ok", merged) or ("either", merged): "either" when a node
    one side deleted had chunks written by another (the docs do not say whether that is a
    conflict or the delete wins; both are accepted, the delete winning).
    """
    vs = view(base, session).nodes
    views = []
    for inherited, own in forks:
        start = view(base, inherited)
        views.append((start.nodes, view(start, own).nodes))
    paths = set(vs).union(*(set(i) | set(v) for i, v in views))
    result: dict[str, Node] = {}
    conflict = False
    for p in sorted(paths):
        mine = vs.get(p)
        touch = [(i.get(p), v.get(p)) for i, v in views if v.get(p) != i.get(p)]
        if not touch:
            if mine is not None:
                result[p] = mine
            continue
        values = {v for _, v in touch}
        if len(values) > 1:
            conflict = True
        new = touch[0][1]
        if any(mine != before and mine != new for before, _ in touch):
            conflict = True  # the session changed it too since that fork
        if new is not None:
            result[p] = new
    writers: dict[tuple[int, int], list[int | None]] = {}
    parties = [session] + [own for _, own in forks]
    for part in parties:
        for nid, cs in part.chunks.items():
            for coord, w in cs.items():
                writers.setdefault((nid, coord), []).append(w)
    if any(len(ws) > 1 and any(w is not None for w in ws) for ws in writers.values()):
        conflict = True
    if conflict:
        return "conflict", None
    alive = {n.nid for n in result.values()}
    party_views = [vs] + [v for _, v in views]
    either = any(
        nid not in alive and cs and nid in {n.nid for n in pv.values()}
        for part, pv in zip(parties, party_views, strict=True)
        for nid, cs in part.chunks.items()
    )
    writes: dict[int, dict[int, int | None]] = {}
    for part in parties:
        for nid, cs in part.chunks.items():
            writes.setdefault(nid, {}).update(cs)
    tree = apply_chunks(base, result, writes)
    merged = changes_between(base, tree, writes)
    return ("either" if either else "ok"), merged


# ------------------------------------------------------------------------------ repository
@dataclass
class Snap:
    sid: str
    tree: Tree
    parent: str | None  # as ancestry shows it (expiry re-parents)
    true_parent: str | None  # the snapshot its log is relative to
    written: int  # epoch of written_at
    obj_epoch: int  # epoch the snapshot object was last written (expiry rewrites it)
    log: Log
    manifests: dict[int, int]  # array node id -> manifest id

    @property
    def rewritten(self) -> bool:
        """Its history was cut by expiry: its log does not describe the step to ``parent``."""
        return self.parent != self.true_parent


class RepoModel:
    """Snapshots, refs and the objects a collection may delete."""

    def __init__(self, genesis: str) -> None:
        self.genesis = genesis
        empty_log = make_log(EMPTY, EMPTY, {})
        self.snaps: dict[str, Snap] = {
            genesis: Snap(genesis, EMPTY, None, None, 0, 0, empty_log, {})}
        self.order: list[str] = [genesis]  # acknowledged snapshots, oldest first
        self.branches: dict[str, str] = {"main": genesis}
        self.tags: dict[str, str] = {}
        self.burnt_tags: set[str] = set()
        self.epoch = 0
        self.chunk_epoch: dict[int, int] = {}
        self.manifest: dict[int, tuple[int, frozenset[int]]] = {}
        self.gone_chunks: set[int] = set()
        self.gone_manifests: set[int] = set()
        self.gone_snaps: set[str] = set()
        self.gone_tx: set[str] = set()
        self._next_manifest = 0

    # -- history
    def chain(self, sid: str) -> list[str]:
        out = []
        cur: str | None = sid
        while cur is not None:
            out.append(cur)
            cur = self.snaps[cur].parent
        return out

    def landed(self, base: str, tip: str) -> list[str]:
        """Snapshots a session based on ``base`` rebases over, oldest first.

        Raises
        ------
        ModelConflict
            ("history") if ``tip`` does not descend from ``base`` through history that
            expiry or an amend left describable by transaction logs.
        """
        out = []
        cur: str | None = tip
        while cur != base:
            if cur is None or self.snaps[cur].rewritten:
                raise ModelConflict("history")
            out.append(cur)
            cur = self.snaps[cur].parent
        return out[::-1]

    def reachable(self) -> set[str]:
        out: set[str] = set()
        for root in {self.genesis, *self.branches.values(), *self.tags.values()}:
            out.update(self.chain(root))
        return out

    # -- objects
    def new_wid(self, wid: int) -> None:
        self.chunk_epoch[wid] = self.epoch

    def lost(self, wids: Iterable[int]) -> bool:
        return any(w in self.gone_chunks for w in wids)

    def readable(self, sid: str) -> bool:
        s = self.snaps[sid]
        return (sid not in self.gone_snaps
                and not any(m in self.gone_manifests for m in s.manifests.values())
                and not self.lost(s.tree.wids()))

    def sound(self, sid: str) -> bool:
        """Readable, with its whole history and its transaction logs in place."""
        return self.readable(sid) and all(
            a not in self.gone_snaps and a not in self.gone_tx for a in self.chain(sid))

    def manifests_for(self, base: Snap, writes: dict[int, dict[int, int | None]],
                      tree: Tree) -> dict[int, int]:
        """Manifests of a commit on ``base``: rewritten for every array it wrote chunks of,
        inherited for the others (one manifest per array: the arrays are tiny)."""
        out: dict[int, int] = {}
        for p, n in tree.nodes.items():
            if not n.is_array:
                continue
            if writes.get(n.nid):
                if tree.chunks[n.nid]:
                    self._next_manifest += 1
                    mid = self._next_manifest
                    self.manifest[mid] = (self.epoch, frozenset(tree.chunks[n.nid].values()))
                    out[n.nid] = mid
                continue
            b = base.tree.nodes.get(p)
            if b is not None and b.nid == n.nid and n.nid in base.manifests:
                out[n.nid] = base.manifests[n.nid]
        return out

    def writes_manifest(self, writes: dict[int, dict[int, int | None]], tree: Tree) -> bool:
        return any(writes.get(n.nid) and tree.chunks[n.nid]
                   for n in tree.nodes.values() if n.is_array)

    def add(self, sid: str, tree: Tree, parent: str | None, true_parent: str | None,
            log: Log, manifests: dict[int, int]) -> None:
        assert sid not in self.snaps, f"snapshot id {sid} returned twice"
        self.snaps[sid] = Snap(sid, tree, parent, true_parent, self.epoch, self.epoch, log,
                               manifests)
        self.order.append(sid)

    # -- maintenance
    def expire(self, cut: int, delete_branches: bool, delete_tags: bool) -> set[str]:
        """docs/maintenance.md section 5."""
        before = self.reachable()
        todo = [("tag", n, s) for n, s in sorted(self.tags.items())]
        todo += [("branch", n, s) for n, s in sorted(self.branches.items())]
        for kind, name, tip in todo:
            chain = self.chain(tip)
            editable = chain[0]
            for s in chain:
                if self.snaps[s].written >= cut:
                    editable = s
            snap = self.snaps[editable]
            if editable != self.genesis and snap.parent != self.genesis:
                snap.parent = self.genesis
                snap.obj_epoch = self.epoch
            if self.snaps[tip].written < cut:
                if kind == "tag" and delete_tags:
                    del self.tags[name]
                    self.burnt_tags.add(name)
                elif kind == "branch" and delete_branches and name != "main":
                    del self.branches[name]
        return before - self.reachable()

    def gc(self, cut: int, incremental: bool) -> set[str]:
        """docs/maintenance.md sections 1-3; returns the acknowledged snapshots deleted."""
        reach = self.reachable()
        live_m = {m for s in reach for m in self.snaps[s].manifests.values()}
        live_c = {w for s in reach for w in self.snaps[s].tree.wids()}
        snaps = {s for s, x in self.snaps.items()
                 if s not in reach and s not in self.gone_snaps and x.obj_epoch < cut}
        txs = {s for s, x in self.snaps.items()
               if s not in reach and s not in self.gone_tx and x.written < cut}
        mans = {m for m, (e, _) in self.manifest.items()
                if m not in live_m and m not in self.gone_manifests and e < cut}
        if incremental:  # only chunks some deleted manifest names
            named = {w for m in mans for w in self.manifest[m][1]}
            chunks = named - live_c - self.gone_chunks
        else:
            chunks = {w for w, e in self.chunk_epoch.items()
                      if w not in live_c and w not in self.gone_chunks and e < cut}
        self.gone_snaps |= snaps
        self.gone_tx |= txs
        self.gone_manifests |= mans
        self.gone_chunks |= chunks
        return snaps
