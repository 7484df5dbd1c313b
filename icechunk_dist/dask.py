"""Distributed writes with Dask: forks on workers, tree-reduce merge, one commit.

The main entry points:

- :func:`store_dask` writes dask arrays into zarr arrays opened on a fork's store. Each
  write task takes a run of consecutive blocks (up to dask's ``array.chunk-size``, at
  least four tasks per thread; ``blocks_per_task`` overrides it), computes them inside the
  task and writes them concurrently into a private child fork; the task returns the
  child's chunk writes as a compact columnar record, and the records are merged *on the
  workers* (``split_every`` at a time), so the driver receives one merged fork, not one
  per task. Merge it into the parent session and commit once.
- :func:`to_zarr` does all of it for one array: create the array in the session, fork,
  write, merge.
- :func:`gather_forks` is the recipe for plain ``dask.array.to_zarr(arr, fork.store, ...)``
  on a ``distributed`` cluster: it collects the fork's change-sets from every worker
  process and checks that every chunk of the written region is accounted for.

Works with the threaded, processes and distributed schedulers. Nothing is printed: each
write is logged (``logging.getLogger("icechunk_dist.dask")``) and ``progress=True`` draws a
progress bar on stderr (``distributed``'s under a client, dask's local ``ProgressBar``
otherwise).

Needs the optional extra: ``pip install 'icechunk_dist[dask]'``.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from icechunk_dist.changeset import ChangeSet
from icechunk_dist.errors import (
    InvalidInputError,
    LostWritesError,
    SessionStateError,
)
from icechunk_dist.session import ForkSession, Session
from icechunk_dist.session import forks as _forks
from icechunk_dist.store import IcechunkStore

try:
    import dask  # noqa: F401  (checked here so that a missing extra says which one)
except ImportError as e:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        f"icechunk_dist.dask needs dask: pip install 'icechunk_dist[dask]' ({e})"
    ) from e

if TYPE_CHECKING:
    import dask.array as da
    import zarr

__all__ = ["gather_forks", "session_merge_reduction", "store_dask", "to_zarr"]

_log = logging.getLogger(__name__)

Region = tuple[slice, ...]


# ------------------------------------------------------------------------------ tasks
class _WriteSpec:
    """What every write task of one target needs: the fork, the target's path, its zarr
    metadata (so no task reopens the array) and the node names (to name arrays in
    conflicts).

    It is embedded in every task (so the tasks have no dependencies and the scheduler
    spreads them like plain Zarr's), but pickles as a token plus one payload that each
    process decodes once (:func:`_load_spec`): all tasks of a worker share one fork copy.
    """

    __slots__ = ("_payload", "fork", "metadata", "names", "path", "token")

    def __init__(self, fork: ForkSession, path: str, metadata: Any,
                 names: dict[str, str], token: str) -> None:
        self.fork = fork
        self.path = path
        self.metadata = metadata
        self.names = names
        self.token = token
        self._payload: bytes | None = None
        _remember_spec(self)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._payload is None:
            import pickle

            self._payload = pickle.dumps((self.fork, self.path, self.metadata, self.names),
                                         protocol=pickle.HIGHEST_PROTOCOL)
        return (_load_spec, (self.token, self._payload))


_SPECS: OrderedDict[str, _WriteSpec] = OrderedDict()
_SPECS_LOCK = threading.Lock()


def _remember_spec(spec: _WriteSpec) -> None:
    with _SPECS_LOCK:
        _SPECS[spec.token] = spec
        while len(_SPECS) > 64:
            _SPECS.popitem(last=False)


def _load_spec(token: str, payload: bytes) -> _WriteSpec:
    with _SPECS_LOCK:
        hit = _SPECS.get(token)
    if hit is not None:
        return hit
    import pickle

    fork, path, metadata, names = pickle.loads(payload)
    spec = _WriteSpec(fork, path, metadata, names, token)
    spec._payload = payload
    return spec


def _write_record(block: np.ndarray, spec: _WriteSpec, region: Region) -> ChangeSet:
    """Write one block through a private child fork; return only its chunk writes (a
    compact columnar record, not a fork)."""
    return _write_group(spec, (region,), block)


def _write_group(spec: _WriteSpec, regions: tuple[Region, ...], *blocks: np.ndarray
                 ) -> ChangeSet:
    """Task: write several blocks (computed inside this task) through one private child
    fork, concurrently (encoding runs in zarr's thread pool, storage I/O overlaps it);
    return the child's chunk writes as one record."""
    import asyncio

    import zarr
    from zarr.core.sync import sync
    from zarr.storage import StorePath

    child = spec.fork.child()
    arr = zarr.AsyncArray(metadata=spec.metadata, store_path=StorePath(child.store, spec.path))
    limit = max(1, int(zarr.config.get("async.concurrency") or 1))

    async def write_all() -> None:
        gate = asyncio.Semaphore(limit)

        async def one(region: Region, block: np.ndarray) -> None:
            async with gate:
                await arr.setitem(region, block)

        await asyncio.gather(*(one(r, b) for r, b in zip(regions, blocks, strict=True)))

    sync(write_all())
    return _forks.own_changes(child)


def _merge_records(*records: ChangeSet, names: dict[str, str]) -> ChangeSet:
    """Task: merge write records (associative: any tree shape gives the same result)."""
    return _forks.merge_changes(records, names=names)


def _finish(spec: _WriteSpec, *records: ChangeSet, names: dict[str, str]) -> ForkSession:
    """Task: the last merge, as one fork of the parent session."""
    return _forks.fork_with_changes(spec.fork, _forks.merge_changes(records,
                                                                          names=names))


def _write_block(block: np.ndarray, fork: ForkSession, path: str, region: Region,
                 ) -> ForkSession:
    """Task (dask without the task spec): write one block through a private child fork."""
    import zarr

    child = fork.child()
    arr = zarr.open_array(child.store, path=path, mode="r+")
    arr[region] = block
    return child


def _merge_forks(*forks: ForkSession) -> ForkSession:
    """Task: merge forks pairwise (associative, so any tree shape gives the same result)."""
    first, *rest = forks
    if not rest:
        return first
    # never mutate an input in place: a retried task must see the same inputs
    out = first.child()
    return out.merge(first, *rest)


def _tree_merge(parts: list[Any], split_every: int, token: str) -> Any:
    import dask

    merge = dask.delayed(_merge_forks, pure=False)
    level = 0
    while len(parts) > 1:
        parts = [
            merge(*parts[i : i + split_every],
                  dask_key_name=f"icechunk-merge-{token}-{level}-{i // split_every}")
            for i in range(0, len(parts), split_every)
        ]
        level += 1
    return parts[0]


def _has_task_spec() -> bool:
    try:
        from dask._task_spec import Task, TaskRef  # noqa: F401
    except ImportError:  # pragma: no cover - dask older than 2025
        return False
    return True


def _source_tasks(src: da.Array) -> tuple[dict[Any, Any], str]:
    """The optimized (blockwise-fused) graph of ``src`` as a dict of task-spec nodes."""
    import dask
    from dask._task_spec import convert_legacy_graph

    with dask.config.set({"optimization.fuse.active": False}):
        (opt,) = dask.optimize(src)
    return convert_legacy_graph(dict(opt.__dask_graph__())), opt.name


class _Plan:
    """The fused write graph: one task per block (the source block computed inline, then
    written), and a wide merge tree of the tasks' write records."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.graph: dict[Any, Any] = {}
        self.writes: list[str] = []
        self.block_uses: dict[Any, int] = {}
        # (task key, block key, spec, region), per source (blocks of two sources never
        # share a task: their regions may overlap, which must conflict, not overwrite)
        self.pending: dict[int, list[tuple[str, Any, _WriteSpec, Region]]] = {}
        self.names: dict[str, str] = {}
        self.final_spec: _WriteSpec | None = None
        self.blocks = 0
        self.itemsize: dict[int, int] = {}

    def add_spec(self, spec: _WriteSpec) -> None:
        self.names.update(spec.names)
        if self.final_spec is None:
            self.final_spec = spec

    def add_source(self, src: da.Array, spec: _WriteSpec, k: int, path: str,
                   region: Region) -> None:
        dsk, name = _source_tasks(src)
        self.itemsize[k] = src.dtype.itemsize
        self.graph.update(dsk)
        for idx, breg in _block_regions(src, region):
            bkey = (name, *idx)
            wkey = f"icechunk-write-{self.token}-{k}-{path}-" + "-".join(map(str, idx))
            self.block_uses[bkey] = self.block_uses.get(bkey, 0) + 1
            self.pending.setdefault(k, []).append((wkey, bkey, spec, breg))

    def build(self, split_every: int, blocks_per_task: int | None
              ) -> tuple[dict[Any, Any], str]:
        from dask._task_spec import Alias, GraphNode, Task, TaskRef

        g = self.graph
        n_blocks = sum(len(items) for items in self.pending.values())
        threads = _total_threads() if blocks_per_task is None else 1
        for k, items in self.pending.items():
            per = blocks_per_task or _blocks_per_task(items, self.itemsize[k], n_blocks,
                                                      threads)
            for i in range(0, len(items), per):
                group = items[i : i + per]
                blocks: list[Any] = []
                for _wkey, bkey, _spec, _breg in group:
                    node = g.get(bkey)
                    if (isinstance(node, GraphNode) and not isinstance(node, Alias)
                            and self.block_uses[bkey] == 1):
                        blocks.append(g.pop(bkey))  # computed inside the write task (fused)
                    else:
                        blocks.append(TaskRef(bkey))
                wkey, spec = group[0][0], group[0][2]
                regions = tuple(breg for _w, _b, _s, breg in group)
                g[wkey] = Task(wkey, _write_group, spec, regions, *blocks)
                self.writes.append(wkey)
                self.blocks += len(group)
        parts = list(self.writes)
        level = 0
        while len(parts) > split_every:
            nxt = []
            for i in range(0, len(parts), split_every):
                mkey = f"icechunk-merge-{self.token}-{level}-{i // split_every}"
                g[mkey] = Task(mkey, _merge_records,
                               *(TaskRef(p) for p in parts[i : i + split_every]),
                               names=self.names)
                nxt.append(mkey)
            parts = nxt
            level += 1
        assert self.final_spec is not None
        fkey = f"icechunk-merge-{self.token}-final"
        g[fkey] = Task(fkey, _finish, self.final_spec,
                       *(TaskRef(p) for p in parts), names=self.names)
        return g, fkey


# ------------------------------------------------------------------------------ helpers
def _default_client() -> Any:
    """The current ``distributed`` client, or None (not installed, or no client)."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _total_threads() -> int:
    """Threads that will run the tasks: the distributed client's workers, else this
    machine's cores (dask's threaded and processes schedulers use that many)."""
    import os

    client = _default_client()
    n = 0
    if client is not None:
        try:
            n = sum(client.nthreads().values())
        except OSError:  # the scheduler went away: fall back to this machine
            n = 0
    return max(1, n or os.cpu_count() or 1)


def _blocks_per_task(items: Sequence[tuple[str, Any, _WriteSpec, Region]], itemsize: int,
                     n_blocks: int, threads: int) -> int:
    """How many consecutive blocks of one target one write task takes (the default).

    Blocks up to dask's ``array.chunk-size`` (what ``dask.array.to_zarr`` rechunks to)
    go in one task, but never so many that there are fewer than 4 tasks per thread: the
    per-task cost (scheduling, a child fork, one record in the merge tree) is paid per
    group, not per chunk, while every thread still has work until the end.
    """
    import dask
    from dask.utils import parse_bytes

    biggest = max(math.prod(s.stop - s.start for s in breg) for _w, _b, _s, breg in items)
    limit = parse_bytes(dask.config.get("array.chunk-size", "128MiB"))
    by_bytes = max(1, limit // max(1, biggest * itemsize))
    by_threads = max(1, math.ceil(n_blocks / (4 * threads)))
    return int(min(by_bytes, by_threads, len(items)))


def _fork_of(target: zarr.Array) -> ForkSession:
    store = target.store
    if not isinstance(store, IcechunkStore):
        raise InvalidInputError(
            "store_dask targets must be zarr arrays opened on a ForkSession's store "
            f"(fork.store); got an array on {type(store).__name__}"
        )
    sess = store.session
    if isinstance(sess, Session):
        raise SessionStateError(
            "store_dask targets must be opened on a fork's store, not a writable "
            "session's: fork = session.fork(); zarr.open_array(fork.store, path=...)"
        )
    if not isinstance(sess, ForkSession):
        raise InvalidInputError("store_dask targets must be opened on fork.store")
    return sess


def _normalize_region(region: Region | None, target: zarr.Array, source: da.Array) -> Region:
    shape = target.shape
    if region is None:
        region = tuple(slice(0, s) for s in shape)
    if len(region) != len(shape):
        raise InvalidInputError(f"region {region} does not match array of shape {shape}")
    out = []
    for sl, n in zip(region, shape, strict=True):
        start, stop, step = sl.indices(n)
        if step != 1:
            raise InvalidInputError("regions must have step 1")
        out.append(slice(start, stop))
    want = tuple(s.stop - s.start for s in out)
    if want != tuple(source.shape):
        raise InvalidInputError(
            f"source of shape {source.shape} does not fit region {out} of {target.path!r}"
        )
    return tuple(out)


def _aligned(source: da.Array, target: zarr.Array, region: Region) -> da.Array:
    """Rechunk ``source`` so every block covers whole target chunks (no two tasks share a
    chunk: that would be a lost update)."""
    cs = target.chunks
    new_chunks = []
    for d, (sl, c) in enumerate(zip(region, cs, strict=True)):
        start, stop = sl.start, sl.stop
        edges = list(itertools.accumulate(source.chunks[d], initial=start))
        ok = all((e % c == 0) or e == stop for e in edges[1:-1]) and (
            start % c == 0 or len(edges) == 2
        )
        if ok:
            new_chunks.append(source.chunks[d])
            continue
        # cut at target chunk boundaries
        first = min(stop, (start // c + 1) * c) - start
        sizes = [first] if first else []
        pos = start + first
        while pos < stop:
            step = min(c, stop - pos)
            sizes.append(step)
            pos += step
        new_chunks.append(tuple(sizes))
    new = tuple(new_chunks)
    return source if new == source.chunks else source.rechunk(new)


def _block_regions(source: da.Array, region: Region) -> list[tuple[tuple[int, ...], Region]]:
    starts = [
        [region[d].start + o for o in itertools.accumulate(source.chunks[d], initial=0)]
        for d in range(source.ndim)
    ]
    out = []
    for idx in itertools.product(*(range(len(c)) for c in source.chunks)):
        reg = tuple(slice(starts[d][i], starts[d][i + 1]) for d, i in enumerate(idx))
        out.append((idx, reg))
    return out


def _compute(obj: Any, *, progress: bool, description: str) -> Any:
    """Compute with the active scheduler; log ``description``, and with ``progress`` draw
    a progress bar on stderr that works under that scheduler. Nothing goes to stdout."""
    import dask

    _log.info("%s", description)
    start = time.perf_counter()
    client = _default_client()
    if client is not None and dask.config.get("scheduler", None) in (None, "dask.distributed"):
        fut = client.compute(obj)
        if progress:
            print(description, file=sys.stderr, flush=True)
            _distributed_progress(fut)
        result = fut.result()
    elif progress:
        from dask.diagnostics import ProgressBar

        print(description, file=sys.stderr, flush=True)
        with ProgressBar(out=sys.stderr):
            result = dask.compute(obj)[0]
    else:
        result = dask.compute(obj)[0]
    _log.info("icechunk_dist: written in %.2f s", time.perf_counter() - start)
    return result


def _distributed_progress(fut: Any) -> None:
    """Block until ``fut`` is done, drawing distributed's progress bar (its widget in a
    notebook; in a terminal its text bar, on stderr instead of stdout)."""
    from distributed import progress as dprogress
    from distributed.diagnostics.progress import format_time
    from distributed.diagnostics.progressbar import TextProgressBar
    from distributed.utils import is_kernel

    if is_kernel():
        dprogress(fut)
        return

    class _StderrBar(TextProgressBar):  # type: ignore[misc]
        def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:
            frac = (1 - remaining / all) if all else 1.0
            bar = "#" * int(self.width * frac)
            sys.stderr.write(f"\r[{bar:<{self.width}}] | {int(100 * frac)}% Completed | "
                             f"{format_time(self.elapsed)}")
            sys.stderr.flush()

        def _draw_stop(self, **kwargs: Any) -> None:
            sys.stderr.write("\n")
            sys.stderr.flush()

    _StderrBar([fut])


# ------------------------------------------------------------------------------ API
def store_dask(
    *,
    sources: Sequence[da.Array],
    targets: Sequence[zarr.Array],
    regions: Sequence[Region | None] | None = None,
    split_every: int | None = None,
    blocks_per_task: int | None = None,
    progress: bool = False,
    compute: bool = True,
) -> Any:
    """Write dask arrays into zarr arrays opened on a fork's store; return the merged fork.

    Parameters
    ----------
    sources
        Dask arrays to write.
    targets
        Zarr arrays opened on ``fork.store`` (all on forks of the same session).
    regions
        Optional region (tuple of slices) of each target to write.
    split_every
        Fan-in of the tree reduction that merges the tasks' write records on the
        workers (default 32: the records are small columnar tables, so a wide, shallow
        tree costs fewer tasks).
    blocks_per_task
        How many consecutive blocks of one source one write task computes and writes
        (concurrently, through one child fork, returning one record). Default: as many as
        fit in dask's ``array.chunk-size`` (128 MiB unless configured; the size
        ``dask.array.to_zarr`` rechunks to), but at most a quarter of the blocks per
        thread of the cluster, so every thread keeps work. ``1`` gives one task per block.
        An icechunk_dist extension (Icechunk's ``store_dask`` has no such argument).
    progress
        Draw a progress bar on stderr (distributed's under a client, dask's otherwise).
        Default False: the call prints nothing (it logs to ``icechunk_dist.dask``).
    compute
        If False, return a ``dask.delayed`` object that computes the merged fork.

    Returns
    -------
    ForkSession
        One fork holding every chunk written; pass it to ``session.merge``.

    Raises
    ------
    InvalidInputError
        On mismatched arguments or targets that are not on a fork's store.
    SessionStateError
        If a target is on a writable session's store instead of a fork's.
    ConflictError
        If two blocks wrote the same chunk (cannot happen with aligned blocks).
    """

    sources, targets = list(sources), list(targets)
    if len(sources) != len(targets) or not sources:
        raise InvalidInputError("store_dask needs as many sources as targets (at least one)")
    regs: list[Region | None] = list(regions) if regions is not None else [None] * len(sources)
    if len(regs) != len(sources):
        raise InvalidInputError("store_dask needs one region per target (or None)")
    split_every = _DEFAULT_SPLIT_EVERY if split_every is None else int(split_every)
    if split_every < 2:
        raise InvalidInputError("split_every must be at least 2")
    if blocks_per_task is not None:
        if isinstance(blocks_per_task, bool) or not isinstance(blocks_per_task, int | np.integer):
            raise InvalidInputError(
                f"blocks_per_task must be a positive integer or None, got {blocks_per_task!r}")
        if blocks_per_task < 1:
            raise InvalidInputError(
                f"blocks_per_task must be at least 1, got {blocks_per_task}")
        blocks_per_task = int(blocks_per_task)
    forks = [_fork_of(t) for t in targets]
    root = forks[0]
    for f in forks[1:]:
        if _forks.lineage(f) != _forks.lineage(root):
            raise SessionStateError("all targets must be on forks of the same session")
    # task keys are unique per call and per target: the same target (or fork) may appear
    # twice in one call (two regions) or in two calls computed together (compute=False);
    # equal keys would make dask run one task for both and drop the other block's writes
    token = uuid.uuid4().hex[:16]
    checked: list[tuple[da.Array, zarr.Array, Region, ForkSession]] = []
    for src, tgt, reg, f in zip(sources, targets, regs, forks, strict=True):
        region = _normalize_region(reg, tgt, src)
        if src.dtype != tgt.dtype and not np.can_cast(src.dtype, tgt.dtype, "same_kind"):
            raise InvalidInputError(
                f"cannot store {src.dtype} data into {tgt.path!r} of dtype {tgt.dtype}"
            )
        checked.append((_aligned(src, tgt, region), tgt, region, f))
    if _has_task_spec():
        result, n, n_blocks = _fused_write(checked, split_every, token, blocks_per_task)
    else:  # pragma: no cover - dask older than 2025: one task per block plus a fork tree
        result, n = _delayed_write(checked, split_every, token)
        n_blocks = n
    if not compute:
        return result
    depth = max(1, math.ceil(math.log(max(n, 2), split_every)))
    merged = _compute(result, progress=progress,
                      description=f"icechunk_dist: writing {n_blocks} blocks in {n} tasks "
                                  f"(tree merge of depth {depth}, fan-in {split_every})")
    assert isinstance(merged, ForkSession)
    return merged


_DEFAULT_SPLIT_EVERY = 32


def _fused_write(checked: list[tuple[da.Array, zarr.Array, Region, ForkSession]],
                 split_every: int, token: str, blocks_per_task: int | None
                 ) -> tuple[Any, int, int]:
    from dask.delayed import Delayed

    plan = _Plan(token)
    specs: dict[tuple[str, str], _WriteSpec] = {}
    for k, (src, tgt, region, f) in enumerate(checked):
        sk = (f.fork_id, tgt.path)
        if sk not in specs:
            specs[sk] = _WriteSpec(f, tgt.path, tgt.metadata, _forks.node_names(f),
                                   f"{token}-{len(specs)}")
            plan.add_spec(specs[sk])
        plan.add_source(src, specs[sk], k, tgt.path, region)
    graph, key = plan.build(split_every, blocks_per_task)
    return Delayed(key, graph), len(plan.writes), plan.blocks


def _delayed_write(checked: list[tuple[da.Array, zarr.Array, Region, ForkSession]],
                   split_every: int, token: str) -> tuple[Any, int]:
    import dask

    fork_nodes = {f.fork_id: dask.delayed(f, name=f"icechunk-fork-{f.fork_id}")
                  for _, _, _, f in checked}
    write = dask.delayed(_write_block, pure=False)
    parts: list[Any] = []
    for k, (src, tgt, region, f) in enumerate(checked):
        blocks = src.to_delayed()
        for idx, breg in _block_regions(src, region):
            parts.append(write(blocks[idx], fork_nodes[f.fork_id], tgt.path, breg,
                               dask_key_name=f"icechunk-write-{token}-{k}-{tgt.path}-"
                               + "-".join(map(str, idx))))
    return _tree_merge(parts, split_every, token), len(parts)


def to_zarr(
    arr: da.Array,
    session: Session,
    path: str,
    *,
    chunks: Sequence[int] | None = None,
    split_every: int | None = None,
    blocks_per_task: int | None = None,
    progress: bool = False,
    **create_kwargs: Any,
) -> zarr.Array:
    """Create array ``path`` in ``session``, write ``arr`` into it on the workers through
    forks, and merge the result into ``session`` (commit it yourself, once).

    Parameters
    ----------
    arr
        The dask array to write.
    session
        A writable session; the array is created in its pending changes.
    path
        The array's path in the repository (e.g. ``"group/temperature"``).
    chunks
        Zarr chunk shape (default: the dask array's chunk size).
    split_every, blocks_per_task, progress
        As in :func:`store_dask`.
    **create_kwargs
        Passed to ``zarr.create_array`` (``fill_value``, ``compressors``, ``attributes``,
        ``dimension_names``, ``overwrite``...).

    Returns
    -------
    zarr.Array
        The array, opened on the session's store.

    Raises
    ------
    SessionStateError
        If the session is not writable.
    """
    import zarr

    if not isinstance(session, Session) or session.read_only:
        raise SessionStateError("to_zarr needs a writable Session")
    chunk_shape = tuple(chunks) if chunks is not None else tuple(int(c) for c in arr.chunksize)
    zarr.create_array(session.store, name=path, shape=arr.shape, chunks=chunk_shape,
                      dtype=arr.dtype, **create_kwargs)
    fork = session.fork()
    target = zarr.open_array(fork.store, path=path, mode="r+")
    merged = store_dask(sources=[arr], targets=[target], split_every=split_every,
                        blocks_per_task=blocks_per_task, progress=progress)
    session.merge(merged)
    return zarr.open_array(session.store, path=path, mode="r+")


# ------------------------------------------------------------------------------ recipe
def _pop_fork_state(fork_id: str) -> ForkSession | None:
    # sent back as a plain (unshared) value, or the driver would resolve it to its own copy
    return _forks.take_registered_copies(fork_id)


def gather_forks(fork: ForkSession, *, expect: Sequence[tuple[str, Region | None]] = (),
                 client: Any = None) -> ForkSession:
    """Collect what plain ``dask.array.to_zarr(arr, fork.store, ...)`` wrote on every worker
    of a ``distributed`` cluster, as one fork to merge into the parent session.

    Every worker process that unpickled ``fork`` shares one copy of it (same fork id), so
    all chunk writes of that process are in that copy. This pulls those copies from all
    workers (and the driver's), merges them, and, for each ``(path, region)`` in ``expect``,
    checks that every chunk of the region was written or deliberately skipped: a worker
    that died after its tasks were consumed would otherwise lose their refs silently.

    Raises
    ------
    ConflictError
        If chunks of an expected region are missing (rerun the job; nothing was committed).
    """
    import zarr

    if client is None:
        from distributed import default_client

        client = default_client()
    states = client.run(_pop_fork_state, fork.fork_id)
    out = fork.child()
    parts = [s for s in states.values() if s is not None]
    out.merge(*parts)
    out.merge(_forks.fork_with_changes(fork, _forks.own_changes(fork)))
    for path, region in expect:
        arr = zarr.open_array(out.store, path=path, mode="r")
        _check_complete(out, arr, path, region)
    return out


def _check_complete(f: ForkSession, arr: zarr.Array, path: str, region: Region | None) -> None:
    node = _forks.node_record(f, path)
    if node is None or node.array is None:
        raise InvalidInputError(f"no array at {path!r}")
    shape, cs = node.array.shape, node.array.chunk_shape
    reg = region or tuple(slice(0, s) for s in shape)
    lo = [sl.start or 0 for sl in reg]
    hi = [sl.stop if sl.stop is not None else s for sl, s in zip(reg, shape, strict=True)]
    ranges = [range(a // c, -(-b // c)) for a, b, c in zip(lo, hi, cs, strict=True)]
    have = {tuple(int(v) for v in r) for r in _forks.written_coords(f, node.node_id)}
    missing = [c for c in itertools.product(*ranges) if c not in have]
    if missing:
        raise LostWritesError(
            f"{len(missing)} chunk(s) of {path!r} in the written region have no record "
            f"(e.g. {missing[:5]}): a worker holding them was lost. Nothing was committed; "
            "rerun the write (or use icechunk_dist.dask.store_dask, which survives "
            "worker loss)",
            path=path, chunk_coords=missing[:20],
        )


# ------------------------------------------------------------------------------ Icechunk's
def _flatten_forks(items: Any) -> list[ForkSession]:
    out: list[ForkSession] = []
    stack = [items]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        elif isinstance(item, np.ndarray) and item.dtype == object:
            stack.extend(reversed(list(item.ravel())))
        elif isinstance(item, ForkSession):
            out.append(item)
        else:
            raise InvalidInputError(
                f"session_merge_reduction merges forks, got a {type(item).__name__}"
            )
    return out


def _stored_fork(block: Any, axis: Any = None, keepdims: Any = None,
                 computing_meta: bool = False) -> Any:
    """Reduction ``chunk``: the fork whose store a ``return_stored`` block was written to."""
    if computing_meta:
        return np.array([object()], dtype=object)
    target = block.ravel()[0] if isinstance(block, np.ndarray) and block.dtype == object else block
    if isinstance(target, ForkSession):
        return target
    store = getattr(target, "store", None)
    if not isinstance(store, IcechunkStore):
        raise InvalidInputError(
            "session_merge_reduction takes the arrays returned by dask.array.store(..., "
            "return_stored=True, load_stored=False) or dask.array.to_zarr(..., "
            f"return_stored=True) on a fork's store; got blocks of {type(target).__name__} "
            "(stored arrays that load their data, e.g. store(..., compute=False, "
            "return_stored=True) without load_stored=False, no longer hold the targets)"
        )
    sess = store.session
    if not isinstance(sess, ForkSession):
        raise SessionStateError(
            "session_merge_reduction needs arrays written through a fork's store "
            "(fork = session.fork(); target = zarr.open_array(fork.store, ...)), not a "
            "writable session's store"
        )
    return sess


def _merge_stored(*items: Any, axis: Any = None, keepdims: Any = None,
                  computing_meta: bool = False) -> Any:
    """Reduction ``aggregate``: merge the forks of several blocks into a new fork.

    Blocks written in one process may share one copy of the fork (dask hands tasks that
    need the same target one object), so the same copy, or the same change-set, arrives
    more than once: it is merged once. Different writes of one chunk still conflict.
    """
    if computing_meta:
        return np.array([object()], dtype=object)
    forks = _flatten_forks(items)
    if not forks:
        raise InvalidInputError("session_merge_reduction got no forks to merge")
    unique: list[ForkSession] = []
    seen: set[str] = set()
    for f in forks:
        ids = _forks.contributors(f)
        if any(g is f for g in unique) or (ids and ids <= seen):
            continue
        unique.append(f)
        seen |= ids
    if len(unique) == 1:
        return unique[0]
    out = unique[0].child()
    # contributions under fresh ids: overlapping ids here are one copy's writes seen twice
    return out.merge(*(_forks.fork_with_changes(f, _forks.own_changes(f))
                       for f in unique))


def _targets_array(a: da.Array) -> da.Array:
    """``a`` itself, or, for ``to_zarr(..., return_stored=True)`` / ``store(...,
    compute=True, return_stored=True)`` (whose blocks load the stored data back), the
    persisted array of targets those blocks load from."""
    import dask.array as dsa

    graph = a.__dask_graph__()
    deps = getattr(graph, "dependencies", {}).get(a.name, set())
    if a.name.startswith("load_chunk-") and len(deps) == 1:
        (dep,) = deps
        if dep.startswith("store-map-"):
            return dsa.Array(graph, dep, a.chunks,
                             meta=np.empty((0,) * a.ndim, dtype=object))
    return a


def session_merge_reduction(arrays: da.Array | Sequence[da.Array], *,
                            split_every: int | None, **kwargs: Any) -> ForkSession:
    """Merge what ``dask.array.store`` / ``dask.array.to_zarr`` wrote through forks into one
    fork, with a ``dask.array.reduction`` tree (Icechunk's ``session_merge_reduction``).

    This is how plain Dask users get one commit::

        fork = session.fork()
        target = zarr.open_array(fork.store, path="x", mode="r+")
        stored = dask.array.store(x, target, compute=False, lock=False,
                                  return_stored=True, load_stored=False)
        # or: stored = dask.array.to_zarr(x, target, return_stored=True)
        session.merge(session_merge_reduction(stored, split_every=8))
        session.commit("one commit")

    Every block of ``arrays`` is the zarr array a task wrote to; its store's session is the
    copy of the fork that task wrote through. The copies are merged ``split_every`` at a time
    on the workers, and the driver receives one fork. :func:`store_dask` does all of it in
    one call; :func:`gather_forks` is the completeness-checked alternative for results that
    were discarded.

    Parameters
    ----------
    arrays
        One dask array or a list of them, as returned with ``return_stored=True``.
    split_every
        Fan-in of the reduction tree (``None``: dask's default).
    **kwargs
        Passed to ``dask.array.reduction`` (as Icechunk does).

    Returns
    -------
    ForkSession
        One fork holding every write; pass it to ``session.merge``.

    Raises
    ------
    InvalidInputError
        If the arrays were not written through a fork's store, or are not dask arrays.
    SessionStateError
        If they were written through a writable session's store, or through forks of
        different sessions.
    ConflictError
        If two tasks wrote one chunk differently.
    """
    import dask
    import dask.array as dsa

    given: list[Any] = list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]
    # numpy arrays among them (variables that were in memory, written on the driver, as
    # xarray's to_zarr returns them) wrote nothing through a fork: skipped, as Icechunk does
    given = [a for a in given if not isinstance(a, np.ndarray)]
    for a in given:
        if not isinstance(a, dsa.Array):
            raise InvalidInputError(
                f"session_merge_reduction takes dask arrays, got {type(a).__name__}"
            )
    if not given:
        raise InvalidInputError("session_merge_reduction needs at least one dask array")
    targets = [_targets_array(a) for a in given]
    meta = np.array([object()], dtype=object)
    reduced = [
        dsa.reduction(
            a, chunk=_stored_fork, aggregate=_merge_stored, split_every=split_every,
            concatenate=False, keepdims=False, dtype=object, meta=meta,
            name="icechunk-merge-stored", **kwargs,
        )
        for a in targets
    ]
    parts = dask.compute(*reduced)
    merged = _merge_stored(*parts)
    assert isinstance(merged, ForkSession)
    return merged
