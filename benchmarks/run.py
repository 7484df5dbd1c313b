"""icechunk_dist benchmark: distributed writes vs plain Zarr, merge and commit scaling.

Not part of the test suite. One run, on one ``distributed.LocalCluster`` (2 worker
processes, 1 thread each, by default), prints:

1. bulk write throughput (1 GiB, 1 MiB chunks) and small-chunk throughput (100,000 chunks of
   4 KiB): icechunk_dist (``store_dask`` through forks + merge + one commit) vs plain Zarr
   (``dask.array.to_zarr`` into a zarr ``LocalStore`` directory), as ratios. Both sides use
   the same source, the same dask blocks, the same zarr chunks and no compression;
2. ``session.merge(*forks)`` + ``commit`` time for 10, 100 and 1000 forks (built in-process,
   each holding the same number of chunk refs);
3. ``commit`` time for 10k, 100k and 1M changed chunk refs (columnar change-sets with fake
   native chunk ids: no chunk objects are written);
4. driver peak RSS (sampled during each phase, and ``ru_maxrss`` for the whole run).

Usage::

    python benchmarks/run.py            # full size (a few minutes on 2 cores)
    python benchmarks/run.py --smoke    # tiny sizes, for CI (well under a minute)
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIB = 1024 * 1024


# ------------------------------------------------------------------------------ sizes
@dataclass
class Sizes:
    bulk_bytes: int = 1024 * MIB          # 1 GiB
    bulk_chunk: int = 512                  # (512, 512) float32 = 1 MiB chunks
    bulk_block: int = 2048                 # (2048, 2048) float32 = 16 MiB dask blocks
    small_chunks: int = 100_000            # chunks of 4 KiB
    small_chunk: int = 32                  # (32, 32) float32 = 4 KiB
    small_block_chunks: int = 5_000        # zarr chunks per dask block
    forks: tuple[int, ...] = (10, 100, 1000)
    refs_per_fork: int = 1_000
    commit_refs: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    repeat: int = 2
    label: str = "full"


SMOKE = Sizes(bulk_bytes=32 * MIB, bulk_chunk=256, bulk_block=1024, small_chunks=2_000,
              small_block_chunks=500, forks=(2, 5, 10), refs_per_fork=100,
              commit_refs=(1_000, 10_000), repeat=1, label="smoke")


# ------------------------------------------------------------------------------ memory
def rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is in the test extra
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ru_maxrss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


class PeakRSS:
    """Sample the driver's RSS every few milliseconds in a background thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())


@contextmanager
def timed() -> Iterator[list[float]]:
    out: list[float] = []
    t = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - t)


# ------------------------------------------------------------------------------ data
def _fill_block(block: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Cheap, deterministic, non-constant float32 data (never equal to the fill value)."""
    loc = block_info[None]["array-location"] if block_info else [(0, block.shape[0])]
    start = loc[0][0]
    n = block.size
    base = np.arange(n, dtype=np.float32).reshape(block.shape)
    return base + np.float32(start + 1)


def make_source(shape: tuple[int, ...], blocks: tuple[int, ...]) -> Any:
    import dask.array as da

    empty = da.empty(shape, chunks=blocks, dtype="f4")
    return empty.map_blocks(_fill_block, dtype="f4")


def square_shape(total_bytes: int, chunk: int) -> tuple[int, int]:
    """A 2-D float32 shape of about ``total_bytes`` that is a whole number of chunks."""
    side_chunks = max(1, round((total_bytes / 4) ** 0.5 / chunk))
    rows = max(1, round(total_bytes / 4 / (side_chunks * chunk) / chunk))
    return rows * chunk, side_chunks * chunk


# ------------------------------------------------------------------------------ writes
@dataclass
class WriteResult:
    name: str
    nbytes: int
    nchunks: int
    zarr_s: float
    ice_s: float
    ice_write_s: float
    ice_commit_s: float
    fork_pickle: int = 0

    @property
    def ratio(self) -> float:
        return self.zarr_s / self.ice_s


def write_plain_zarr(src: Any, chunks: tuple[int, ...], root: Path) -> float:
    import dask.array as da
    import zarr
    from zarr.storage import LocalStore

    if root.exists():
        shutil.rmtree(root)
    store = LocalStore(str(root))
    arr = zarr.create_array(store, name="x", shape=src.shape, chunks=chunks, dtype=src.dtype,
                            compressors=None, fill_value=0.0)
    t = time.perf_counter()
    da.to_zarr(src, arr, compute=True)
    return time.perf_counter() - t


def write_icechunk(src: Any, chunks: tuple[int, ...], root: Path
                   ) -> tuple[float, float, float, int]:
    import zarr

    import icechunk_dist as icd
    from icechunk_dist.dask import store_dask

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    repo = icd.Repository.create(icd.local_filesystem_storage(str(root)))
    session = repo.writable_session("main")
    zarr.create_array(session.store, name="x", shape=src.shape, chunks=chunks,
                      dtype=src.dtype, compressors=None, fill_value=0.0)
    fork = session.fork()
    fork_pickle = len(pickle.dumps(fork))
    target = zarr.open_array(fork.store, path="x", mode="r+")
    t0 = time.perf_counter()
    merged = store_dask(sources=[src], targets=[target], progress=False)
    t1 = time.perf_counter()
    session.merge(merged)
    session.commit("benchmark write")
    t2 = time.perf_counter()
    return t2 - t0, t1 - t0, t2 - t1, fork_pickle


def bench_write(name: str, shape: tuple[int, int], chunk: int, block: tuple[int, int],
                repeat: int, workdir: Path) -> WriteResult:
    src = make_source(shape, block)
    chunks = (chunk, chunk)
    nchunks = (shape[0] // chunk) * (shape[1] // chunk)
    zs: list[float] = []
    ice: list[tuple[float, float, float, int]] = []
    for i in range(repeat):
        # alternate the order so neither side always runs on a warmer cluster / page cache
        order: list[Callable[[], None]] = [
            lambda: zs.append(write_plain_zarr(src, chunks, workdir / f"{name}-zarr")),
            lambda: ice.append(write_icechunk(src, chunks, workdir / f"{name}-ice")),
        ]
        if i % 2:
            order.reverse()
        for run in order:
            gc.collect()
            run()
    for d in (workdir / f"{name}-zarr", workdir / f"{name}-ice"):
        shutil.rmtree(d, ignore_errors=True)
    best = min(ice, key=lambda r: r[0])
    return WriteResult(name=name, nbytes=shape[0] * shape[1] * 4, nchunks=nchunks,
                       zarr_s=min(zs), ice_s=best[0], ice_write_s=best[1],
                       ice_commit_s=best[2], fork_pickle=best[3])


# ------------------------------------------------------------------------------ in-process
def _fake_table(ndim: int, coords: np.ndarray, rng: np.random.Generator) -> Any:
    from icechunk_dist.format import KIND_NATIVE, ChunkTable

    n = len(coords)
    return ChunkTable(
        ndim=ndim,
        coords=np.ascontiguousarray(coords, dtype=np.int64),
        kinds=np.full(n, KIND_NATIVE, np.uint8),
        ids=rng.integers(0, 256, size=(n, 12), dtype=np.uint8),
        offsets=np.zeros(n, np.uint64),
        lengths=np.full(n, 4096, np.uint64),
        url_idx=np.full(n, -1, np.int32),
    )


def _grid_coords(start: int, n: int, width: int) -> np.ndarray:
    lin = np.arange(start, start + n, dtype=np.int64)
    return np.stack([lin // width, lin % width], axis=1)


def _new_session_with_array(n_refs: int, root: Path) -> tuple[Any, Any, str, int, int]:
    import zarr

    import icechunk_dist as icd

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    repo = icd.Repository.create(icd.local_filesystem_storage(str(root)))
    session = repo.writable_session("main")
    width = 1000
    rows = -(-n_refs // width)
    zarr.create_array(session.store, name="x", shape=(rows * 32, width * 32),
                      chunks=(32, 32), dtype="f4", compressors=None, fill_value=0.0)
    node = session._node("x")
    assert node is not None
    return repo, session, node.node_id, 2, width


@dataclass
class MergeResult:
    forks: int
    refs: int
    merge_s: float
    commit_s: float
    peak_rss: int

    @property
    def total_s(self) -> float:
        return self.merge_s + self.commit_s


def bench_merge(n_forks: int, refs_per_fork: int, workdir: Path) -> MergeResult:
    from icechunk_dist.changeset import ArrayChunks

    total = n_forks * refs_per_fork
    _repo, session, nid, ndim, width = _new_session_with_array(total, workdir / "merge")
    rng = np.random.default_rng(n_forks)
    root = session.fork()
    forks = []
    for i in range(n_forks):
        f = root.child()
        coords = _grid_coords(i * refs_per_fork, refs_per_fork, width)
        f._changes.chunks[nid] = ArrayChunks(ndim, _fake_table(ndim, coords, rng))
        forks.append(f)
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        session.merge(*forks)
        t1 = time.perf_counter()
        session.commit(f"merge of {n_forks} forks")
        t2 = time.perf_counter()
    shutil.rmtree(workdir / "merge", ignore_errors=True)
    return MergeResult(n_forks, total, t1 - t0, t2 - t1, mem.peak)


@dataclass
class CommitResult:
    refs: int
    commit_s: float
    rss_before: int
    peak_rss: int
    manifests: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def bench_commit(n_refs: int, workdir: Path) -> CommitResult:
    from icechunk_dist.changeset import ArrayChunks

    repo, session, nid, ndim, width = _new_session_with_array(n_refs, workdir / "commit")
    rng = np.random.default_rng(n_refs)
    table = _fake_table(ndim, _grid_coords(0, n_refs, width), rng)
    session._changes.chunks[nid] = ArrayChunks(ndim, table)
    del table
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        sid = session.commit(f"commit of {n_refs} refs")
        dt = time.perf_counter() - t0
    snap = repo.lookup_snapshot(sid)
    assert snap.id == sid
    manifests = len(list((workdir / "commit" / "manifests").iterdir())) \
        if (workdir / "commit" / "manifests").exists() else 0
    shutil.rmtree(workdir / "commit", ignore_errors=True)
    return CommitResult(n_refs, dt, mem.start, mem.peak, manifests)


# ------------------------------------------------------------------------------ report
def _mib(n: float) -> str:
    return f"{n / MIB:,.1f}"


def _status(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="icechunk_dist benchmark (not a test)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI smoke run)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--repeat", type=int, default=None,
                   help="repetitions of each write benchmark (best is reported)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--skip-writes", action="store_true",
                   help="only the in-process merge/commit benchmarks")
    args = p.parse_args(argv)
    sz = SMOKE if args.smoke else Sizes()
    if args.repeat is not None:
        sz.repeat = args.repeat

    import dask
    import distributed
    import zarr
    from distributed import Client, LocalCluster

    import icechunk_dist

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="icechunk-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    print(f"icechunk_dist benchmark ({sz.label} sizes)")
    print(f"  python {platform.python_version()}, icechunk_dist {icechunk_dist.__version__}, "
          f"zarr {zarr.__version__}, dask {dask.__version__}, "
          f"distributed {distributed.__version__}, numpy {np.__version__}")
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cores; scratch dir {workdir}")
    print(f"  cluster: LocalCluster, {args.workers} worker processes x "
          f"{args.threads_per_worker} thread(s); no compression on either side; best of "
          f"{sz.repeat}")
    sys.stdout.flush()

    writes: list[WriteResult] = []
    merges: list[MergeResult] = []
    commits: list[CommitResult] = []
    try:
        with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                          processes=True, dashboard_address=None) as cluster, \
                Client(cluster):
            if not args.skip_writes:
                # warm up: imports, worker-side caches, first-compute costs for both sides
                bench_write("warmup", (256, 256), 64, (128, 128), 1, workdir)
                shape = square_shape(sz.bulk_bytes, sz.bulk_chunk)
                block = (min(sz.bulk_block, shape[0]), min(sz.bulk_block, shape[1]))
                writes.append(bench_write("bulk", shape, sz.bulk_chunk, block, sz.repeat,
                                          workdir))
                print(f"  done: bulk write {shape}", flush=True)
                c = sz.small_chunk
                grid_cols = 100 if sz.small_chunks >= 10_000 else 20
                grid_rows = -(-sz.small_chunks // grid_cols)
                shape = (grid_rows * c, grid_cols * c)
                rows_per_block = max(1, sz.small_block_chunks // grid_cols)
                block = (min(rows_per_block * c, shape[0]), shape[1])
                writes.append(bench_write("small", shape, c, block, sz.repeat, workdir))
                print(f"  done: small-chunk write {shape}", flush=True)
            for n in sz.forks:
                merges.append(bench_merge(n, sz.refs_per_fork, workdir))
                print(f"  done: merge of {n} forks", flush=True)
            for n in sz.commit_refs:
                commits.append(bench_commit(n, workdir))
                print(f"  done: commit of {n:,} refs", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    # ---------------------------------------------------------------------------- table
    print()
    print("=" * 96)
    print("RESULTS")
    print("=" * 96)
    if writes:
        print("Distributed write (same cluster, same source, same zarr chunks, no compression)")
        print(f"  {'case':<20}{'chunks':>8}{'MiB':>8}{'zarr s':>9}{'zarr MiB/s':>12}"
              f"{'ice s':>8}{'(write':>8}{'+commit)':>9}{'ice MiB/s':>11}{'ratio':>7}"
              f"{'target':>8}  status")
        for w in writes:
            target = 0.9 if w.name == "bulk" else 0.7
            label = ("bulk, 1 MiB chunks" if w.name == "bulk"
                     else f"small, {sz.small_chunk * sz.small_chunk * 4 // 1024} KiB chunks")
            if w.name == "bulk" and sz.label != "full":
                label = f"bulk, {sz.bulk_chunk * sz.bulk_chunk * 4 // 1024} KiB chunks"
            print(f"  {label:<20}{w.nchunks:>8,}{w.nbytes / MIB:>8.1f}{w.zarr_s:>9.2f}"
                  f"{w.nbytes / MIB / w.zarr_s:>12.1f}{w.ice_s:>8.2f}{w.ice_write_s:>8.2f}"
                  f"{w.ice_commit_s:>9.2f}{w.nbytes / MIB / w.ice_s:>11.1f}{w.ratio:>6.2f}x"
                  f"{target:>7.1f}x  {_status(w.ratio >= target)}")
        print("  (ratio = icechunk_dist throughput / plain zarr throughput; ice s = store_dask + "
              f"merge + commit; pickled fork: {writes[0].fork_pickle:,} bytes)")
        print()
    if merges:
        print("Merge + commit of forks built in-process "
              f"({sz.refs_per_fork:,} chunk refs per fork)")
        print(f"  {'forks':>7}{'refs':>11}{'merge s':>10}{'commit s':>10}{'total s':>10}"
              f"{'us/ref':>9}{'peak RSS MiB':>14}")
        for m in merges:
            print(f"  {m.forks:>7,}{m.refs:>11,}{m.merge_s:>10.3f}{m.commit_s:>10.3f}"
                  f"{m.total_s:>10.3f}{1e6 * m.total_s / m.refs:>9.2f}{_mib(m.peak_rss):>14}")
        if len(merges) >= 2:
            a, b = merges[0], merges[-1]
            growth = (b.merge_s / max(a.merge_s, 1e-9)) / (b.refs / a.refs)
            print(f"  merge time grew {b.merge_s / max(a.merge_s, 1e-9):,.1f}x for "
                  f"{b.refs / a.refs:,.0f}x the refs (ratio {growth:.2f}; <= ~1 is linear); "
                  f"target: at most linear  {_status(growth <= 1.5)}")
        print()
    if commits:
        print("Commit of one change-set (columnar, fake native chunk ids)")
        print(f"  {'refs':>11}{'commit s':>10}{'us/ref':>9}{'manifests':>11}"
              f"{'RSS before':>12}{'peak RSS':>10}{'target':>18}  status")
        for c in commits:
            tgt = ""
            status = ""
            if c.refs >= 1_000_000:
                ok = c.commit_s < 5.0 and c.peak_rss < 1024 * MIB
                tgt, status = "<5 s, RSS <1 GiB", _status(ok)
            print(f"  {c.refs:>11,}{c.commit_s:>10.3f}{1e6 * c.commit_s / c.refs:>9.2f}"
                  f"{c.manifests:>11}{_mib(c.rss_before):>12}{_mib(c.peak_rss):>10}"
                  f"{tgt:>18}  {status}")
        print("  (RSS in MiB, driver process)")
        print()
    if sz.label != "full":
        print("(smoke sizes: the MET/MISSED statuses are not meaningful at this scale)")
    print(f"Driver peak RSS over the whole run (ru_maxrss): {_mib(ru_maxrss())} MiB")
    print(f"Total benchmark time: {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
