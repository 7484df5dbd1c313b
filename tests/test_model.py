"""Randomized model test (issue 20): one repository driven through the public API only,
checked after every step against a plain-Python reference model (tests/model_reference.py).

A Hypothesis state machine interleaves, on one repository:

- writable sessions on branches, several alive at once on different tips: chunk writes and
  deletes, new and deleted arrays and groups, attribute changes, appends;
- ``commit`` without and with ``rebase_with=`` every solver (``ConflictDetector()``,
  ``BasicConflictSolver()`` with ``UseOurs``/``UseTheirs``), ``Session.amend``,
  ``Session.rebase``, ``discard_changes``;
- forks (``session.fork()``, zarr writes through ``fork.store``, ``session.merge``);
- rearrange sessions (``session.move``, commit);
- ``expire_snapshots`` and ``garbage_collect`` (full and ``incremental=True``), with cut-offs
  before every write, between writes, and after every write; a collection may also run
  *during* a commit, an amend or a rearrange commit (right before its ref write);
- branch and tag churn (create, reset, delete).

The model predicts every outcome: the exact error class (a documented one: ``ConflictError``
and its subclasses, ``SessionStateError``, ``InvalidInputError``, ``NotFoundError``,
``AlreadyExistsError`` where the docstrings name it) or the resulting state. A failed
operation leaves the model unchanged (a session that met ``GCConflictError`` is abandoned,
as docs/maintenance.md tells users to). Any other exception fails the test.

After every step: every branch and tag resolves as the model says; every acknowledged
snapshot that the model says is readable (reachable, or not yet collected) reads back
exactly: node tree, attributes, shapes, the set of chunk keys and every chunk's value, node
ids stable; every snapshot the model says was collected is gone; ``ancestry`` of every
branch and tag is the model's history; every tip is a valid Zarr hierarchy. Snapshots are
immutable objects, so a snapshot is read again only after an expiry or collection (the
only operations that rewrite or delete objects) and at the end of each run.

Cost: the "model" settings profile (defined here) runs a few dozen short programs on local
disk and fewer on the moto S3 server (about a minute on 2 shared cores). A larger run::

    ICD_MODEL_EXAMPLES=500 ICD_MODEL_STEPS=60 pytest tests/test_model.py

(``ICD_MODEL_EXAMPLES`` applies to local disk; the S3 run uses a quarter of it.)

Failures the run finds on today's main are reduced to small explicit tests in
tests/test_model_regressions.py.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import pytest
import zarr
import zarr.core.sync
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from model_reference import (
    CHUNK,
    FUTURE,
    MAX_CHUNKS,
    START,
    Changes,
    ModelConflict,
    Node,
    RepoModel,
    Tree,
    delete_subtree,
    diff_of,
    log_of,
    make_log,
    merge,
    parent_of,
    rebase,
    set_node,
    under,
    valid_hierarchy,
    view,
    write_chunk,
)

import icechunk_dist as icd
from icechunk_dist.storage import Storage, WrapperStorage

EXAMPLES = int(os.environ.get("ICD_MODEL_EXAMPLES", "30"))
STEPS = int(os.environ.get("ICD_MODEL_STEPS", "40"))

settings.register_profile(
    "model", max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)

DOCUMENTED = (icd.ConflictError, icd.SessionStateError, icd.InvalidInputError,
              icd.NotFoundError, icd.AlreadyExistsError)
BRANCHES = ["main", "b1", "b2"]
TAGS = ["t1", "t2", "t3"]
CREATE_PATHS = ["", "x", "z", "g", "g/y", "g/k"]
MOVE_PATHS = ["x", "z", "g", "w", "g/y", "g/w", "g/k"]
SOLVER_NAMES = ["none", "detector", "basic", "ours", "theirs"]
CUTS = ["past", "prev", "epoch", "future"]
IDX = st.integers(0, 11)
COORD = st.sampled_from([0, 0, 1, 1, 2, 3, 4, 5])  # overlapping writes are the interesting ones
CUT = st.sampled_from(CUTS)
DURING = st.none() | st.tuples(CUT, st.booleans())  # a collection during the ref write


def solver_of(name: str) -> icd.ConflictSolver | None:
    return {
        "none": None,
        "detector": icd.ConflictDetector(),
        "basic": icd.BasicConflictSolver(),
        "ours": icd.BasicConflictSolver(on_chunk_conflict=icd.VersionSelection.UseOurs),
        "theirs": icd.BasicConflictSolver(on_chunk_conflict=icd.VersionSelection.UseTheirs),
    }[name]


def model_solver(name: str) -> str:
    return {"basic": "ours"}.get(name, name)


# ------------------------------------------------------------------------------ plumbing
class HookStorage(WrapperStorage):
    """The real storage, with one optional hook awaited right before the next write of a
    branch version (a commit's ref write): where a concurrent collection is most harmful."""

    _VERSION = re.compile(r"refs/branch\.[^/]+/\d{12}")

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.hook: Callable[[], Awaitable[None]] | None = None

    @property
    def supports_pickle(self) -> bool:
        return False

    def describe(self) -> str:
        return "hook:" + self.inner.describe()

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    async def put(self, key: str, data: bytes, *, mode: Any = "overwrite") -> None:
        if self.hook is not None and self._VERSION.fullmatch(key):
            hook, self.hook = self.hook, None
            await hook()
        await self.inner.put(key, data, mode=mode)


class Clock:
    """Epoch boundaries: every write of epoch k happens after tick k and before tick k+1,
    with margins larger than the storage clock's resolution (1 s on S3: moto truncates
    ``LastModified``; a few ms for file modification times)."""

    def __init__(self, whole_seconds: bool) -> None:
        self.whole = whole_seconds
        now = time.time()
        first = math.floor(now) - 1 if whole_seconds else now - 1.0
        self.ticks = [datetime.fromtimestamp(first, UTC)]

    def tick(self) -> None:
        if self.whole:
            now = time.time()
            edge = math.ceil(now + 0.02)
            time.sleep(edge - now + 0.05)
            self.ticks.append(datetime.fromtimestamp(edge, UTC))
        else:
            time.sleep(0.03)
            self.ticks.append(datetime.now(UTC))
            time.sleep(0.03)

    def cut(self, name: str) -> tuple[datetime, int]:
        """(``older_than``, model epoch) for a cut-off name."""
        last = len(self.ticks) - 1
        if name == "future":
            return datetime.now(UTC) + timedelta(hours=1), FUTURE
        k = {"past": 0, "prev": max(last - 1, 0), "epoch": last}[name]
        return self.ticks[k], k


class MSession:
    def __init__(self, real: Any, branch: str, base: str) -> None:
        self.real, self.branch, self.base, self.ch = real, branch, base, Changes()
        # writes in one session are ordered (docs/design/013): a fork made after the
        # session last wrote an array overrides those writes; later ones are concurrent
        self.gen = 0
        self.chunk_gen: dict[int, int] = {}


class MFork:
    def __init__(self, real: Any, owner: int, base: str, inherited: Changes,
                 forked_at: int = 0) -> None:
        self.real, self.owner, self.base = real, owner, base
        self.inherited, self.own = inherited, Changes()
        self.forked_at = forked_at


class MRearrange:
    def __init__(self, real: Any, branch: str, base: str, tree: Tree) -> None:
        self.real, self.branch, self.base, self.tree, self.moves = real, branch, base, tree, 0


def pick(items: dict[int, Any] | list[Any], i: int) -> Any:
    keys = sorted(items) if isinstance(items, dict) else items
    return keys[i % len(keys)]


async def _keys(store: Any) -> list[str]:
    return [k async for k in store.list()]


def read_tree(session: Any) -> tuple[dict[str, tuple[Any, ...]], dict[str, set[int]]]:
    """What a session shows: path -> (kind, attrs, chunk length, n chunks, values per
    chunk), and the chunk keys listed per array path."""
    store = session.store
    keys = zarr.core.sync.sync(_keys(store))
    paths = sorted("" if k == "zarr.json" else k[: -len("/zarr.json")]
                   for k in keys if k == "zarr.json" or k.endswith("/zarr.json"))
    listed: dict[str, set[int]] = {}
    out: dict[str, tuple[Any, ...]] = {}
    for p in paths:
        node = zarr.open(store, path=p, mode="r") if p else zarr.open_group(store, mode="r")
        attrs = dict(node.attrs)
        if isinstance(node, zarr.Array):
            length = node.chunks[0]
            data = node[...]
            n = node.shape[0] // length
            values = []
            for c in range(n):
                part = np.unique(data[c * length:(c + 1) * length])
                assert len(part) == 1, f"chunk {c} of /{p} mixes writes: {part}"
                values.append(int(part[0]))
            out[p] = ("array", attrs, length, n, tuple(values))
            prefix = f"{p}/c/"
            listed[p] = {int(k[len(prefix):]) for k in keys if k.startswith(prefix)}
        else:
            out[p] = ("group", attrs)
    return out, listed


def expected_tree(tree: Tree) -> tuple[dict[str, tuple[Any, ...]], dict[str, set[int]]]:
    out: dict[str, tuple[Any, ...]] = {}
    listed: dict[str, set[int]] = {}
    for p, n in tree.nodes.items():
        if n.is_array:
            assert n.spec is not None
            chunks = tree.chunks[n.nid]
            values = tuple(chunks.get(c, 0) for c in range(n.nchunks))
            out[p] = ("array", dict(n.attrs), CHUNK[n.spec], n.nchunks, values)
            listed[p] = set(chunks)
        else:
            out[p] = ("group", dict(n.attrs))
    return out, listed


# ------------------------------------------------------------------------------ the machine
class RepoMachine(RuleBasedStateMachine):
    make_storage: ClassVar[Callable[[], tuple[Storage, bool, Callable[[], None]]]]

    def __init__(self) -> None:
        super().__init__()
        inner, whole_seconds, self.cleanup = type(self).make_storage()
        self.clock = Clock(whole_seconds)
        self.storage = HookStorage(inner)
        config = icd.RepositoryConfig(inline_chunk_threshold_bytes=0)  # every chunk an object
        self.repo = icd.Repository.create(self.storage, config)
        self.plain = icd.Repository.open(inner)  # for collections run inside a hook
        self.model = RepoModel(self.repo.lookup_branch("main"))
        self.sessions: dict[int, MSession] = {}
        self.forks: dict[int, MFork] = {}
        self.rearranges: dict[int, MRearrange] = {}
        self.counter = 0
        self.next_nid = 0
        self.verified: set[str] = set()
        self.node_ids: dict[int, str] = {}  # model node id -> real node id
        self.check_gone = False

    def _new(self) -> int:
        self.counter += 1
        return self.counter

    def _nid(self) -> int:
        self.next_nid += 1
        return self.next_nid

    def teardown(self) -> None:
        self.cleanup()

    # -------------------------------------------------------------- outcome checking
    def _run(self, what: str, fn: Callable[[], Any], expect: tuple[str, Any]) -> Any:
        """Run ``fn``; ``expect`` is ("ok", None), ("err", cls) or ("either", cls)."""
        kind, cls = expect
        label = what.split("(")[0].split(" on ")[0]
        try:
            result = fn()
        except DOCUMENTED as e:
            event(f"{label}: {type(e).__name__}")
            assert kind in ("err", "either") and isinstance(e, cls), (
                f"{what}: expected {kind} {getattr(cls, '__name__', '')}, "
                f"got {type(e).__name__}: {e}")
            return e
        assert kind in ("ok", "either"), (
            f"{what}: expected {cls.__name__}, but it succeeded ({result!r})")
        event(f"{label}: ok")
        return result

    def _status(self, ms: MSession) -> None:
        got = ms.real.status()
        want = diff_of(log_of(self.model.snaps[ms.base].tree, ms.ch))
        for name, value in want.items():
            assert getattr(got, name) == value, (
                f"status().{name} of the session on {ms.branch!r}: {getattr(got, name)} != "
                f"model {value}")

    def _drop_session(self, key: int) -> None:
        self.sessions.pop(key, None)
        for fk in [k for k, f in self.forks.items() if f.owner == key]:
            del self.forks[fk]

    def _collect(self, cut_name: str, incremental: bool) -> set[str]:
        """The model's side of a collection; abandons sessions whose base it deleted."""
        _, k = self.clock.cut(cut_name)
        gone = self.model.gc(k, incremental)
        for key, ms in list(self.sessions.items()):
            if not self.model.readable(ms.base):
                self._drop_session(key)
        for key, f in list(self.forks.items()):
            if not self.model.readable(f.base):
                del self.forks[key]
        for key, r in list(self.rearranges.items()):
            if not self.model.readable(r.base):
                del self.rearranges[key]
        self.verified.clear()
        self.check_gone = True
        return gone

    def _arm(self, during: tuple[str, bool] | None) -> list[Any]:
        """Arm a collection to run right before the next ref write; returns a list that
        receives its summary once it ran."""
        ran: list[Any] = []
        if during is None:
            return ran
        cut_name, incremental = during
        older, _ = self.clock.cut(cut_name)

        async def collect() -> None:
            ran.append(await asyncio.to_thread(
                lambda: self.plain.garbage_collect(older, incremental=incremental)))

        self.storage.hook = collect
        return ran

    def _check_hook(self, during: tuple[str, bool] | None, ran: list[Any],
                    reaches: bool) -> None:
        if during is not None:
            assert bool(ran) == reaches, (
                "the collection armed before the ref write " + ("did not run" if reaches
                                                                else "ran unexpectedly"))

    # -------------------------------------------------------------- setup
    @initialize()
    def setup(self) -> None:
        s = self.repo.writable_session("main")
        ms = MSession(s, "main", self.model.genesis)
        self.sessions[0] = ms
        self._create(ms, "", "group")
        self._create(ms, "x", "A")
        self._create(ms, "g", "group")
        self._create(ms, "g/y", "B")
        self._write(ms, "x", 1, False)
        self._write(ms, "g/y", 0, False)
        self._commit(0, "none", None)
        assert not self.sessions

    # -------------------------------------------------------------- session writes
    def _session(self, s: int) -> MSession:
        """Session number ``s`` (modulo); opens one on main if there is none."""
        if not self.sessions:
            self.sessions[self._new()] = MSession(self.repo.writable_session("main"), "main",
                                                  self.model.branches["main"])
        return self.sessions[pick(self.sessions, s)]

    def _view(self, ms: MSession) -> Tree:
        return view(self.model.snaps[ms.base].tree, ms.ch)

    def _create(self, ms: MSession, path: str, kind: str) -> None:
        base = self.model.snaps[ms.base].tree
        if kind == "group":
            zarr.create_group(ms.real.store, path=path or None)
            node = Node(self._nid(), "group")
        else:
            zarr.create_array(ms.real.store, name=path, shape=(START[kind] * CHUNK[kind],),
                              chunks=(CHUNK[kind],), dtype="i4", fill_value=0)
            node = Node(self._nid(), "array", (), kind, START[kind])
        set_node(base, ms.ch, path, node)

    def _write(self, ms: MSession, path: str, coord: int, delete: bool) -> None:
        node = self._view(ms).nodes[path]
        assert node.spec is not None
        self._write_to(ms.real.store, node, path, coord, delete, ms.ch)
        ms.chunk_gen[node.nid] = ms.gen

    def _write_to(self, store: Any, node: Node, path: str, coord: int, delete: bool,
                  ch: Changes) -> None:
        assert node.spec is not None
        length = CHUNK[node.spec]
        wid = None if delete else self._new()
        arr = zarr.open_array(store, path=path, mode="r+")
        arr[coord * length:(coord + 1) * length] = 0 if wid is None else wid
        if wid is not None:
            self.model.new_wid(wid)
        write_chunk(ch, node.nid, coord, wid)

    @precondition(lambda self: len(self.sessions) < 4)
    @rule(b=st.sampled_from(BRANCHES))
    def open_session(self, b: str) -> None:
        exists = b in self.model.branches
        got = self._run(f"writable_session({b!r})", lambda: self.repo.writable_session(b),
                        ("ok", None) if exists else ("err", icd.NotFoundError))
        if exists:
            self.sessions[self._new()] = MSession(got, b, self.model.branches[b])

    @rule(s=IDX, n=IDX, coord=COORD, delete=st.sampled_from([False, False, True]))
    def write_chunk(self, s: int, n: int, coord: int, delete: bool) -> None:
        ms = self._session(s)
        arrays = sorted(p for p, x in self._view(ms).nodes.items() if x.is_array)
        if not arrays:
            return
        path = pick(arrays, n)
        self._write(ms, path, coord % self._view(ms).nodes[path].nchunks, delete)
        self._status(ms)

    @rule(s=IDX, p=st.sampled_from(CREATE_PATHS), kind=st.sampled_from(["group", "A", "B"]))
    def create_node(self, s: int, p: str, kind: str) -> None:
        ms = self._session(s)
        nodes = self._view(ms).nodes
        if p in nodes or (p == "" and kind != "group"):
            return
        if p and (parent_of(p) not in nodes or nodes[parent_of(p)].is_array):
            return
        self._create(ms, p, kind)
        self._status(ms)

    @rule(s=IDX, n=IDX)
    def delete_node(self, s: int, n: int) -> None:
        ms = self._session(s)
        paths = sorted(p for p in self._view(ms).nodes if p)
        if not paths:
            return
        p = pick(paths, n)
        parent = parent_of(p)
        grp = zarr.open_group(ms.real.store, path=parent or None, mode="r+")
        del grp[p.rsplit("/", 1)[-1]]
        delete_subtree(self.model.snaps[ms.base].tree, ms.ch, p)
        self._status(ms)

    @rule(s=IDX, n=IDX, append=st.booleans())
    def change_metadata(self, s: int, n: int, append: bool) -> None:
        """Set an attribute (any node), or append one chunk (arrays)."""
        ms = self._session(s)
        nodes = self._view(ms).nodes
        paths = sorted(p for p, x in nodes.items()
                       if not append or (x.is_array and x.nchunks < MAX_CHUNKS))
        if not paths:
            return
        p = pick(paths, n)
        self._change_meta(ms.real.store, nodes[p], p, append,
                          lambda new: set_node(self.model.snaps[ms.base].tree, ms.ch, p, new))
        self._status(ms)

    def _change_meta(self, store: Any, node: Node, p: str, append: bool,
                     record: Callable[[Node], None]) -> None:
        if append:
            assert node.spec is not None
            arr = zarr.open_array(store, path=p, mode="r+")
            arr.resize(((node.nchunks + 1) * CHUNK[node.spec],))
            record(Node(node.nid, node.kind, node.attrs, node.spec, node.nchunks + 1))
            return
        value = self._new()
        if node.is_array:
            zarr.open_array(store, path=p, mode="r+").attrs["v"] = value
        else:
            zarr.open_group(store, path=p or None, mode="r+").attrs["v"] = value
        record(Node(node.nid, node.kind, (("v", value),), node.spec, node.nchunks))

    # -------------------------------------------------------------- commit, amend, rebase
    def _rebase_plan(self, ms: MSession, solver: str
                     ) -> tuple[str, Any]:
        """("ok", (tip, result tree, changes)) or ("err", error class, conflicts)."""
        tip = self.model.branches[ms.branch]
        base_tree = self.model.snaps[ms.base].tree
        if tip == ms.base:
            return "ok", (tip, view(base_tree, ms.ch), ms.ch)
        try:
            landed = self.model.landed(ms.base, tip)
            logs = [self.model.snaps[s].log for s in landed]
            tree, ch = rebase(base_tree, ms.ch, self.model.snaps[tip].tree, logs, solver)
        except ModelConflict as e:
            if e.kind == "history":
                return "err", (icd.HistoryRewrittenError, None)
            return "err", (icd.RebaseFailedError, e.conflicts)
        assert valid_hierarchy(tree), f"model: rebase result is not a hierarchy: {tree}"
        return "ok", (tip, tree, ch)

    def _check_conflicts(self, err: Any, conflicts: Any) -> None:
        if conflicts is None or not isinstance(err, icd.RebaseFailedError):
            return
        got = {(c.conflict_type.name, c.path,
                None if c.conflicted_chunks is None
                else frozenset(cc[0] for cc in c.conflicted_chunks)) for c in err.conflicts}
        want = {(c.type, c.path, c.chunks) for c in conflicts}
        assert got == want, f"RebaseFailedError.conflicts {sorted(map(str, got))} != model " \
                            f"{sorted(map(str, want))}"

    def _ref_write(self, during: tuple[str, bool] | None, wids: set[int], manifest: bool,
                   strict_future: bool) -> tuple[str, Any]:
        """The model at a commit's ref write: a collection may run there. Returns the
        expected outcome."""
        if during is not None:
            self._collect(*during)
        if self.model.lost(wids):
            return "err", icd.GCConflictError
        if during is not None and during[0] == "future" and (manifest or not strict_future):
            # the attempt's own objects (manifests, log, snapshot) were collected: it may fail
            return "either", icd.GCConflictError
        return "ok", None

    def _commit(self, key: int, solver: str, during: tuple[str, bool] | None) -> None:
        ms = self.sessions[key]
        b = ms.branch
        what = f"commit(rebase_with={solver}) on {b!r}"
        ran = self._arm(during)
        reaches = False
        expect: tuple[str, Any]
        plan: Any = None
        conflicts = None
        if ms.ch.is_empty():
            expect = ("err", icd.SessionStateError)
        elif b not in self.model.branches:
            expect = ("err", icd.NotFoundError)
        elif self.model.branches[b] != ms.base and solver == "none":
            expect = ("err", icd.BranchMovedError)
        else:
            kind, plan = self._rebase_plan(ms, model_solver(solver))
            if kind == "err":
                (cls, conflicts), plan = plan, None
                expect = ("err", cls)
            else:
                tip, tree, ch = plan
                alive = {x.nid for x in tree.nodes.values()}
                if self.model.lost(ch.wids(alive)):
                    expect, during = ("err", icd.GCConflictError), None
                elif self.model.lost(ch.wids()):  # only chunks of nodes that are gone
                    expect = ("either", icd.GCConflictError)
                else:
                    reaches = True
                    expect = self._ref_write(
                        during, ch.wids(alive),
                        self.model.writes_manifest(ch.chunks, tree), strict_future=True)
        try:
            got = self._run(what, lambda: ms.real.commit("c", rebase_with=solver_of(solver)),
                            expect)
        finally:
            self.storage.hook = None
        self._check_conflicts(got, conflicts)
        self._check_hook(during, ran, reaches)
        if isinstance(got, str):
            tip, tree, ch = plan
            tip_snap = self.model.snaps[tip]
            manifests = self.model.manifests_for(tip_snap, ch.chunks, tree)
            self.model.add(got, tree, tip, tip, log_of(tip_snap.tree, ch), manifests)
            self.model.branches[b] = got
            self._drop_session(key)
        elif isinstance(got, icd.GCConflictError):
            self._drop_session(key)
        else:
            self._status(ms)

    @rule(s=IDX, solver=st.sampled_from(SOLVER_NAMES), during=DURING)
    def commit(self, s: int, solver: str, during: tuple[str, bool] | None) -> None:
        self._session(s)
        self._commit(pick(self.sessions, s), solver, during)

    @rule(s=IDX, during=DURING)
    def amend(self, s: int, during: tuple[str, bool] | None) -> None:
        self._session(s)
        key = pick(self.sessions, s)
        ms = self.sessions[key]
        b = ms.branch
        base = self.model.snaps[ms.base]
        ran = self._arm(during)
        reaches = False
        tree = view(base.tree, ms.ch)
        alive = {x.nid for x in tree.nodes.values()}
        if ms.base == self.model.genesis or ms.ch.is_empty():
            expect: tuple[str, Any] = ("err", icd.SessionStateError)
        elif b not in self.model.branches:
            expect = ("err", icd.NotFoundError)
        elif self.model.branches[b] != ms.base:
            expect = ("err", icd.BranchMovedError)
        elif self.model.lost(ms.ch.wids(alive)):
            expect = ("err", icd.GCConflictError)
        else:
            reaches = True
            expect = self._ref_write(during, ms.ch.wids(alive),
                                     self.model.writes_manifest(ms.ch.chunks, tree),
                                     strict_future=False)
        try:
            got = self._run(f"amend on {b!r}", lambda: ms.real.amend("amended"), expect)
        finally:
            self.storage.hook = None
        self._check_hook(during, ran, reaches)
        if isinstance(got, str):
            writes: dict[int, set[int]] = {}
            for nid, cs in base.log.chunks.values():
                writes.setdefault(nid, set()).update(cs)
            for nid, cs2 in ms.ch.chunks.items():
                writes.setdefault(nid, set()).update(cs2)
            assert base.true_parent is not None
            log = make_log(self.model.snaps[base.true_parent].tree, tree, writes)
            manifests = self.model.manifests_for(base, ms.ch.chunks, tree)
            self.model.add(got, tree, base.parent, base.true_parent, log, manifests)
            self.model.branches[b] = got
            self._drop_session(key)
        elif isinstance(got, icd.GCConflictError):
            self._drop_session(key)
        else:
            self._status(ms)

    @rule(s=IDX, solver=st.sampled_from([*SOLVER_NAMES[1:], "discard"]))
    def rebase(self, s: int, solver: str) -> None:
        """``session.rebase(solver)``, or ``discard_changes()``."""
        ms = self._session(s)
        if solver == "discard":
            ms.real.discard_changes()
            ms.ch = Changes()
            self._status(ms)
            return
        conflicts = None
        plan: Any = None
        if ms.branch not in self.model.branches:
            expect: tuple[str, Any] = ("err", icd.NotFoundError)
        else:
            kind, plan = self._rebase_plan(ms, model_solver(solver))
            if kind == "err":
                (cls, conflicts), plan = plan, None
                expect = ("err", cls)
            else:
                expect = ("ok", None)
        got = self._run(f"rebase({solver}) on {ms.branch!r}",
                        lambda: ms.real.rebase(solver_of(solver)), expect)
        self._check_conflicts(got, conflicts)
        if plan is not None:
            ms.base, _, ms.ch = plan
        self._status(ms)

    # -------------------------------------------------------------- forks
    def _earlier_dropped(self, ms: MSession, forks: list[MFork]) -> Changes:
        """The session's changes without its writes that the forks override: of an array
        the session last wrote before the forks were made, the chunks they write, and all
        of it if a fork deleted the array."""
        forked_at = min(f.forked_at for f in forks)
        out = ms.ch.copy()
        for f in forks:
            before = view(self.model.snaps[f.base].tree, f.inherited).nodes
            after = self._fork_view(f).nodes
            gone = {n.nid for p, n in before.items()
                    if p not in after or after[p].nid != n.nid}
            for nid in gone | set(f.own.chunks):
                if nid not in out.chunks or ms.chunk_gen.get(nid, -1) > forked_at:
                    continue
                if nid in gone:
                    del out.chunks[nid]
                else:
                    for coord in f.own.chunks[nid]:
                        out.chunks[nid].pop(coord, None)
        return out

    def _fork_view(self, f: MFork) -> Tree:
        return view(view(self.model.snaps[f.base].tree, f.inherited), f.own)

    @precondition(lambda self: len(self.forks) < 3)
    @rule(s=IDX)
    def fork(self, s: int) -> None:
        self._session(s)
        key = pick(self.sessions, s)
        ms = self.sessions[key]
        inherited = Changes(nodes=dict(ms.ch.nodes), deleted=dict(ms.ch.deleted))
        self.forks[self._new()] = MFork(ms.real.fork(), key, ms.base, inherited, ms.gen)
        ms.gen += 1  # the session's writes from now on are concurrent with the fork's

    @rule(f=IDX, op=st.sampled_from(["chunk", "chunk", "clear", "attrs", "delete"]), n=IDX,
          coord=COORD)
    def fork_write(self, f: int, op: str, n: int, coord: int) -> None:
        if not self.forks:
            self.fork(f)
        mf = self.forks[pick(self.forks, f)]
        fbase = view(self.model.snaps[mf.base].tree, mf.inherited)
        nodes = self._fork_view(mf).nodes
        paths = sorted(p for p, x in nodes.items() if op == "attrs" or x.is_array)
        if not paths:
            return
        p = pick(paths, n)
        store = mf.real.store
        if op in ("chunk", "clear"):
            node = nodes[p]
            self._write_to(store, node, p, coord % node.nchunks, op == "clear", mf.own)
        elif op == "attrs":
            self._change_meta(store, nodes[p], p, False,
                              lambda new: set_node(fbase, mf.own, p, new))
        else:
            grp = zarr.open_group(store, path=parent_of(p) or None, mode="r+")
            del grp[p.rsplit("/", 1)[-1]]
            delete_subtree(fbase, mf.own, p)

    @precondition(lambda self: bool(self.forks))
    @rule(s=IDX, picks=st.lists(IDX, min_size=1, max_size=3))
    def merge(self, s: int, picks: list[int]) -> None:
        self._session(s)
        key = pick(self.sessions, s)
        ms = self.sessions[key]
        chosen = list(dict.fromkeys(pick(self.forks, i) for i in picks))
        forks = [self.forks[k] for k in chosen]
        result: Changes | None = None
        if any(f.owner != key or f.base != ms.base for f in forks):
            expect: tuple[str, Any] = ("err", icd.SessionStateError)
        else:
            kind, result = merge(self.model.snaps[ms.base].tree, self._earlier_dropped(ms, forks),
                                 [(f.inherited, f.own) for f in forks])
            expect = {"conflict": ("err", icd.MergeConflictError), "ok": ("ok", None),
                      "either": ("either", icd.MergeConflictError)}[kind]
        got = self._run(f"merge of {len(forks)} fork(s)",
                        lambda: ms.real.merge(*[f.real for f in forks]), expect)
        if got is None:
            assert result is not None
            ms.ch = result
            for f in forks:
                for nid in f.own.chunks:
                    ms.chunk_gen[nid] = ms.gen
            ms.gen += 1
            for k in chosen:
                del self.forks[k]
        self._status(ms)

    # -------------------------------------------------------------- rearrange
    @precondition(lambda self: not self.rearranges)
    @rule(b=st.sampled_from(BRANCHES))
    def open_rearrange(self, b: str) -> None:
        exists = b in self.model.branches
        got = self._run(f"rearrange_session({b!r})", lambda: self.repo.rearrange_session(b),
                        ("ok", None) if exists else ("err", icd.NotFoundError))
        if exists:
            base = self.model.branches[b]
            self.rearranges[self._new()] = MRearrange(got, b, base,
                                                      self.model.snaps[base].tree)

    @rule(src=st.sampled_from([*MOVE_PATHS, ""]), dst=st.sampled_from(MOVE_PATHS),
          n=IDX, existing=st.booleans())
    def move(self, src: str, dst: str, n: int, existing: bool) -> None:
        if not self.rearranges:
            self.open_rearrange("main")
        r = self.rearranges[pick(self.rearranges, 0)]
        nodes = r.tree.nodes
        if existing and len(nodes) > 1:
            src = pick(sorted(p for p in nodes if p), n)
        parent = parent_of(dst)
        if src == "" or under(dst, src):
            expect: tuple[str, Any] = ("err", icd.InvalidInputError)
        elif src not in nodes:
            expect = ("err", icd.NotFoundError)
        elif dst in nodes:
            expect = ("err", icd.AlreadyExistsError)
        elif parent not in nodes:
            expect = ("err", icd.NotFoundError)
        elif nodes[parent].is_array:
            expect = ("err", icd.InvalidInputError)
        else:
            expect = ("ok", None)
        got = self._run(f"move({src!r}, {dst!r})", lambda: r.real.move("/" + src, dst),
                        expect)
        if got is None:
            moved = {(dst + p[len(src):] if under(p, src) else p): x for p, x in nodes.items()}
            r.tree = Tree(moved, r.tree.chunks)
            r.moves += 1

    @precondition(lambda self: bool(self.rearranges))
    @rule(during=DURING)
    def rearrange_commit(self, during: tuple[str, bool] | None) -> None:
        key = pick(self.rearranges, 0)
        r = self.rearranges[key]
        ran = self._arm(during)
        reaches = False
        if not r.moves:
            expect: tuple[str, Any] = ("err", icd.SessionStateError)
        elif r.branch not in self.model.branches:
            expect = ("err", icd.NotFoundError)
        elif self.model.branches[r.branch] != r.base:
            expect = ("err", icd.BranchMovedError)
        else:
            reaches = True
            expect = self._ref_write(during, set(), False, strict_future=False)
        try:
            got = self._run(f"rearrange commit on {r.branch!r}", lambda: r.real.commit("mv"),
                            expect)
        finally:
            self.storage.hook = None
        self._check_hook(during, ran, reaches)
        if isinstance(got, str):
            base = self.model.snaps[r.base]
            manifests = {n.nid: base.manifests[n.nid] for n in r.tree.nodes.values()
                         if n.nid in base.manifests}
            self.model.add(got, r.tree, r.base, r.base, make_log(base.tree, r.tree, {}),
                           manifests)
            self.model.branches[r.branch] = got
            del self.rearranges[key]
        elif isinstance(got, icd.GCConflictError):
            del self.rearranges[key]

    # -------------------------------------------------------------- maintenance
    @rule(op=st.sampled_from(["tick", "expire", "gc", "gc"]), cut=CUT, a=st.booleans(),
          b=st.booleans())
    def maintenance(self, op: str, cut: str, a: bool, b: bool) -> None:
        """A clock tick (a new epoch); expiry (``a``: delete expired branches, ``b``: tags);
        a collection (``a``: incremental)."""
        if op == "tick":
            if len(self.clock.ticks) < 4:
                self.clock.tick()
                self.model.epoch += 1
            return
        older, k = self.clock.cut(cut)
        if op == "expire":
            got = self.repo.expire_snapshots(older, delete_expired_branches=a,
                                             delete_expired_tags=b)
            want = self.model.expire(k, a, b)
            assert got == want, f"expire_snapshots returned {sorted(got)}, model {sorted(want)}"
            self.verified.clear()
            return
        summary = self.repo.garbage_collect(older, incremental=a)
        gone = self._collect(cut, a)
        assert summary.snapshots_deleted >= len(gone), (summary, sorted(gone))

    # -------------------------------------------------------------- refs
    def _targets(self) -> list[str]:
        """Snapshots a ref may point at: sound ones, and collected ones (NotFoundError)."""
        m = self.model
        return [s for s in m.order if m.sound(s) or s in m.gone_snaps]

    @rule(op=st.sampled_from(["create_branch", "reset_branch", "delete_branch", "create_tag",
                              "create_tag", "delete_tag"]), name=st.integers(0, 2), t=IDX)
    def refs(self, op: str, name: int, t: int) -> None:
        """Branch and tag churn (``name``: an index into the branch or tag names)."""
        m = self.model
        if op.endswith("_tag"):
            self._tag_op(op, TAGS[name], t)
            return
        b = BRANCHES[name]
        if op == "delete_branch":
            expect: tuple[str, Any] = (
                ("err", icd.InvalidInputError) if b == "main"
                else ("err", icd.NotFoundError) if b not in m.branches else ("ok", None))
            self._run(f"delete_branch({b!r})", lambda: self.repo.delete_branch(b), expect)
            if expect[0] == "ok":
                del m.branches[b]
            return
        sid = pick(self._targets(), t)
        if sid in m.gone_snaps:
            expect = ("err", icd.NotFoundError)
        elif op == "create_branch":
            expect = ("err", icd.AlreadyExistsError) if b in m.branches else ("ok", None)
        else:
            expect = ("err", icd.NotFoundError) if b not in m.branches else ("ok", None)
        fn = self.repo.create_branch if op == "create_branch" else self.repo.reset_branch
        self._run(f"{op}({b!r})", lambda: fn(b, sid), expect)
        if expect[0] == "ok":
            m.branches[b] = sid

    def _tag_op(self, op: str, name: str, t: int) -> None:
        m = self.model
        if op == "delete_tag":
            expect: tuple[str, Any] = ("ok", None) if name in m.tags else (
                "err", icd.NotFoundError)
            self._run(f"delete_tag({name!r})", lambda: self.repo.delete_tag(name), expect)
            if expect[0] == "ok":
                del m.tags[name]
                m.burnt_tags.add(name)
            return
        sid = pick(self._targets(), t)
        if sid in m.gone_snaps:
            expect = ("err", icd.NotFoundError)
        elif name in m.tags or name in m.burnt_tags:
            expect = ("err", icd.AlreadyExistsError)
        else:
            expect = ("ok", None)
        self._run(f"create_tag({name!r})", lambda: self.repo.create_tag(name, sid), expect)
        if expect[0] == "ok":
            m.tags[name] = sid

    # -------------------------------------------------------------- reading
    @rule(s=IDX)
    def read_session(self, s: int) -> None:
        """A session reads its base plus its own writes (unless a collection took some)."""
        ms = self._session(s)
        if self.model.lost(ms.ch.wids()):
            return
        self._compare(ms.real, self._view(ms), f"session on {ms.branch!r}")

    def _compare(self, session: Any, tree: Tree, what: str) -> None:
        got, listed = read_tree(session)
        want, want_listed = expected_tree(tree)
        for p in got:
            assert p == "" or (parent_of(p) in got and got[parent_of(p)][0] == "group"), (
                f"{what}: /{p} has no parent group (nodes {sorted(got)})")
        assert got == want, f"{what}: reads {got}, model {want}"
        assert listed == want_listed, f"{what}: chunk keys {listed}, model {want_listed}"

    def _verify(self, sid: str) -> None:
        tree = self.model.snaps[sid].tree
        session = self.repo.readonly_session(snapshot_id=sid)
        self._compare(session, tree, f"snapshot {sid}")
        for p, n in tree.nodes.items():
            real = session.get_node_id("/" + p)
            known = self.node_ids.setdefault(n.nid, real)
            assert known == real, f"snapshot {sid}: /{p} changed node id"
        assert len(set(self.node_ids.values())) == len(self.node_ids), "node ids reused"
        self.verified.add(sid)

    def _check_snapshots(self) -> None:
        m = self.model
        for sid in m.order:
            if sid in m.gone_snaps:
                if self.check_gone:
                    with pytest.raises(icd.NotFoundError):
                        self.repo.lookup_snapshot(sid)
            elif m.readable(sid) and sid not in self.verified:
                self._verify(sid)
        self.check_gone = False

    @invariant()
    def refs_history_and_contents(self) -> None:
        m = self.model
        assert self.repo.list_branches() == set(m.branches)
        assert self.repo.list_tags() == set(m.tags)
        refs = [("branch", b, s) for b, s in m.branches.items()]
        refs += [("tag", t, s) for t, s in m.tags.items()]
        for kind, name, sid in refs:
            look = self.repo.lookup_branch if kind == "branch" else self.repo.lookup_tag
            assert look(name) == sid, f"{kind} {name!r}"
            assert m.sound(sid), f"model: {kind} {name!r} at unsound snapshot {sid}"
            assert valid_hierarchy(m.snaps[sid].tree), f"model: {kind} {name!r} tree"
            got = [i.id for i in self.repo.ancestry(**{kind: name})]
            assert got == m.chain(sid), f"ancestry of {kind} {name!r}: {got} != {m.chain(sid)}"
        self._check_snapshots()


# ------------------------------------------------------------------------------ the tests
def _run(make: Callable[[], tuple[Storage, bool, Callable[[], None]]], examples: int) -> None:
    RepoMachine.make_storage = staticmethod(make)  # type: ignore[assignment]
    run_state_machine_as_test(
        RepoMachine, settings=settings(settings.get_profile("model"), max_examples=examples))


def test_model_local(tmp_path: Any) -> None:
    def make() -> tuple[Storage, bool, Callable[[], None]]:
        path = tempfile.mkdtemp(dir=tmp_path)
        return (icd.local_filesystem_storage(path), False,
                lambda: shutil.rmtree(path, ignore_errors=True))

    _run(make, EXAMPLES)


@pytest.mark.s3
def test_model_s3(make_s3_storage: Callable[..., Storage]) -> None:
    def make() -> tuple[Storage, bool, Callable[[], None]]:
        return make_s3_storage(f"model-{uuid.uuid4().hex[:12]}"), True, lambda: None

    _run(make, max(2, EXAMPLES // 4))
