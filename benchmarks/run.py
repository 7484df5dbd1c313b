"""icechunk_dist benchmark: the rows of issue 9, each as a ratio to plain Zarr where one exists.

Not part of the test suite (``tests/test_benchmarks_smoke.py`` runs it at ``--smoke`` size).
One run, on one ``distributed.LocalCluster`` (2 worker processes x 1 thread by default):

1. distributed writes, icechunk_dist (``store_dask`` through forks + ``session.merge`` + one
   ``commit``) vs plain ``dask.array.to_zarr`` on the same cluster, same source, same dask
   blocks, same zarr chunks and zarr's default codecs (zstd):

   - local disk, 1 GiB, 1 MiB chunks, **one dask block per chunk** (what
     ``open_mfdataset(...).to_zarr`` and most pipelines produce; the configuration users run);
   - local disk, same array, 16 MiB blocks (16 chunks per task; flattering: per-task costs
     are spread over 16 chunks);
   - the moto S3 server on 127.0.0.1, 256 MiB, one block per chunk (plain side: zarr's
     ``ObjectStore`` over obstore's ``S3Store`` to the same server);
   - 30,000 chunks of 4 KiB (1,000 chunks per dask block);
2. reading the 1 GiB array back through dask (``da.from_zarr(...).sum()``), both sides;
3. in-process ``session.merge`` of forks and ``commit`` of columnar change-sets;
4. the rows of ``benchmarks/core.py``, ``benchmarks/branch_tip.py``, ``benchmarks/ingest.py``
   and ``benchmarks/virtual.py`` (each imported if present; "not available" otherwise).

Timings are medians of ``--repeat`` runs (3 at full size), the order of the two sides
alternating between runs. Other jobs may share the machine: compare ratios, not absolute
throughputs.

Usage::

    python benchmarks/run.py                # full sizes
    python benchmarks/run.py --smoke        # tiny sizes, for CI (well under a minute or two)
    python benchmarks/run.py --repeat 5 --only write read
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _rss import PeakRSS  # benchmarks/_rss.py (this directory is on sys.path)

MIB = 1024 * 1024
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------ sizes
@dataclass
class Sizes:
    bulk_bytes: int = 1024 * MIB          # 1 GiB
    bulk_chunk: int = 512                  # (512, 512) float32 = 1 MiB chunks
    bulk_chunk_1d: int = 262_144           # (262,144,) float32 = 1 MiB chunks
    big_block: int = 2048                  # (2048, 2048) float32 = 16 MiB dask blocks
    s3_bytes: int = 256 * MIB
    small_chunks: int = 30_000             # chunks of 4 KiB
    small_chunk: int = 32                  # (32, 32) float32 = 4 KiB
    small_block_chunks: int = 1_000        # zarr chunks per dask block
    forks: tuple[int, ...] = (10, 100, 1000)
    refs_per_fork: int = 1_000
    commit_refs: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    histories: tuple[int, int] = (100, 3000)
    repeat: int = 3
    label: str = "full"


SMOKE = Sizes(bulk_bytes=16 * MIB, bulk_chunk=256, bulk_chunk_1d=65_536, big_block=1024,
              s3_bytes=4 * MIB,
              small_chunks=2_000, small_block_chunks=500, forks=(2, 5, 10), refs_per_fork=100,
              commit_refs=(1_000, 10_000), histories=(10, 40), repeat=1, label="smoke")


# ------------------------------------------------------------------------------ memory
def ru_maxrss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


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


# ------------------------------------------------------------------------------ targets
class Backend:
    """Where both sides write: a local scratch directory or a moto S3 bucket."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def plain_store(self, tag: str) -> Any:
        from zarr.storage import LocalStore

        d = self.root / f"{tag}-zarr"
        shutil.rmtree(d, ignore_errors=True)
        return LocalStore(str(d))

    def ice_storage(self, tag: str) -> Any:
        import icechunk_dist as icd

        d = self.root / f"{tag}-ice"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return icd.local_filesystem_storage(str(d))

    def cleanup(self, tag: str) -> None:
        for d in (self.root / f"{tag}-zarr", self.root / f"{tag}-ice"):
            shutil.rmtree(d, ignore_errors=True)


class MotoBackend(Backend):
    name = "moto S3"

    def __init__(self, url: str, bucket: str) -> None:
        self.url, self.bucket = url, bucket

    def plain_store(self, tag: str) -> Any:
        from obstore.store import S3Store
        from zarr.storage import ObjectStore

        prefix = f"{tag}-zarr-{uuid.uuid4().hex[:8]}"
        return ObjectStore(S3Store(self.bucket, prefix=prefix, endpoint=self.url,
                                   region="us-east-1", access_key_id="testing",
                                   secret_access_key="testing",
                                   client_options={"allow_http": True}))

    def ice_storage(self, tag: str) -> Any:
        import icechunk_dist as icd

        return icd.s3_storage(bucket=self.bucket, prefix=f"{tag}-ice-{uuid.uuid4().hex[:8]}",
                              region="us-east-1", endpoint_url=self.url, allow_http=True,
                              access_key_id="testing", secret_access_key="testing")

    def cleanup(self, tag: str) -> None:
        pass


@contextmanager
def moto_server() -> Iterator[MotoBackend]:
    """A moto S3 server on 127.0.0.1 in its own process (benchmarks/_moto.py)."""
    sys.path.insert(0, str(HERE))
    from _moto import moto_server as server

    with server() as (url, bucket):
        yield MotoBackend(url, bucket)


# ------------------------------------------------------------------------------ writes
@dataclass
class Case:
    """One row comparing icechunk_dist with plain Zarr (medians of the repeats)."""

    name: str
    config: str
    target: float | None  # None: a row shown for information, with no target
    flattering: bool
    blocks_per_task: int | None = None  # store_dask's argument (None: its default)
    plain: list[float] = field(default_factory=list)
    ice: list[float] = field(default_factory=list)
    ice_commit: list[float] = field(default_factory=list)  # merge + commit part of ``ice``
    issue_row: str = ""  # which row of issue 24's table this case is ("" for none)

    @property
    def plain_s(self) -> float:
        return statistics.median(self.plain)

    @property
    def ice_s(self) -> float:
        return statistics.median(self.ice)

    @property
    def ratio(self) -> float:
        return self.plain_s / self.ice_s

    def summary(self) -> str:
        target = "no target" if self.target is None else f"target >= {self.target:.1f}x"
        return (f"{self.name}: plain {self.plain_s:.2f} s, icechunk_dist {self.ice_s:.2f} s, "
                f"{self.ratio:.2f}x ({target})")

    @property
    def kind(self) -> str:
        if self.blocks_per_task is not None:
            return "opt-in setting"
        return "flattering" if self.flattering else "user configuration"


def write_plain(src: Any, chunks: tuple[int, ...], store: Any) -> float:
    import dask.array as da
    import zarr

    arr = zarr.create_array(store, name="x", shape=src.shape, chunks=chunks, dtype=src.dtype,
                            fill_value=0.0)
    t = time.perf_counter()
    da.to_zarr(src, arr, compute=True)
    return time.perf_counter() - t


def write_ice(src: Any, chunks: tuple[int, ...], storage: Any,
              blocks_per_task: int | None = None) -> tuple[float, Any, float]:
    import zarr

    import icechunk_dist as icd
    from icechunk_dist.dask import store_dask

    repo = icd.Repository.create(storage)
    session = repo.writable_session("main")
    zarr.create_array(session.store, name="x", shape=src.shape, chunks=chunks,
                      dtype=src.dtype, fill_value=0.0)
    fork = session.fork()
    target = zarr.open_array(fork.store, path="x", mode="r+")
    t0 = time.perf_counter()
    merged = store_dask(sources=[src], targets=[target], progress=False,
                        blocks_per_task=blocks_per_task)
    t1 = time.perf_counter()
    session.merge(merged)
    session.commit("benchmark write")
    t2 = time.perf_counter()
    return t2 - t0, repo, t2 - t1


def bench_write(case: Case, backend: Backend, shape: tuple[int, ...],
                chunk: int | tuple[int, ...], block: tuple[int, ...], repeat: int, tag: str,
                keep: bool = False) -> tuple[Any, Any]:
    """Time both sides ``repeat`` times, alternating which goes first. With ``keep``, return
    the last (plain store, icechunk repo) for the read benchmark. ``chunk``: the zarr chunk
    shape (an int: square 2-D chunks of that side)."""
    src = make_source(shape, block)
    chunks = (chunk, chunk) if isinstance(chunk, int) else chunk
    kept: tuple[Any, Any] = (None, None)
    for i in range(repeat):
        plain_store = ice_repo = None

        def run_plain() -> None:
            nonlocal plain_store
            plain_store = backend.plain_store(tag)
            case.plain.append(write_plain(src, chunks, plain_store))

        def run_ice() -> None:
            nonlocal ice_repo
            dt, ice_repo, dc = write_ice(src, chunks, backend.ice_storage(tag),
                                         case.blocks_per_task)
            case.ice.append(dt)
            case.ice_commit.append(dc)

        order: list[Callable[[], None]] = [run_plain, run_ice]
        if i % 2:
            order.reverse()
        for run in order:
            gc.collect()
            run()
        kept = (plain_store, ice_repo)
    if not keep:
        backend.cleanup(tag)
    return kept


def bench_read(case: Case, plain_store: Any, ice_repo: Any, repeat: int) -> None:
    import dask.array as da
    import zarr

    plain_arr = zarr.open_array(plain_store, path="x", mode="r")
    ice_arr = zarr.open_array(ice_repo.readonly_session("main").store, path="x", mode="r")
    want = None
    for i in range(repeat):
        sides = [(plain_arr, case.plain), (ice_arr, case.ice)]
        if i % 2:
            sides.reverse()
        for arr, out in sides:
            gc.collect()
            t = time.perf_counter()
            total = float(da.from_zarr(arr).sum(dtype="f8").compute())
            out.append(time.perf_counter() - t)
            if want is None:
                want = total
            elif total != want:
                raise AssertionError(f"read back {total}, expected {want}")


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


# ------------------------------------------------------------------------------ imported rows
def _load(name: str) -> Any:
    path = HERE / f"{name}.py"
    if not path.exists():
        return None
    if name == "virtual":
        # its tasks run on a cluster's workers, which import it by name: importable from
        # the benchmarks directory (spawned workers inherit sys.path)
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        mod = importlib.import_module(name)
        import cloudpickle  # and sent by value, wherever the workers' sys.path points

        cloudpickle.register_pickle_by_value(mod)
        return mod
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _branch_tip_rows(mod: Any, sz: Sizes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    short, long = sz.histories
    repeat = 40 if sz.label == "full" else 5
    with tempfile.TemporaryDirectory() as tmp:
        def local(name: str, tmp: str = tmp) -> Any:
            import icechunk_dist as icd

            return icd.local_filesystem_storage(str(Path(tmp) / name))

        measured = [("local", mod.measure("local", local, [short, long], repeat))]
    with mod._moto() as make:
        measured.append(("moto S3", mod.measure("moto S3", make, [short, long], repeat)))
    for backend, (a, b) in measured:
        ratio = b.lookup_ms / a.lookup_ms
        rows.append({
            "name": f"lookup_branch after {long:,} vs {short:,} versions, {backend}",
            "value": f"{a.lookup_ms:.2f} -> {b.lookup_ms:.2f} ms, {ratio:.2f}x",
            "target": "<= 1.5x", "ok": ratio <= 1.5,
            "config": f"requests per lookup: {b.lookup_requests}; commit {a.commit_ms:.1f} -> "
                      f"{b.commit_ms:.1f} ms",
        })
    return rows


def imported_rows(sz: Sizes, workdir: Path, workers: int) -> list[tuple[str, list[Any] | str]]:
    """(module, rows or the reason there are none) for core, branch_tip, ingest, virtual."""
    smoke = sz.label != "full"
    out: list[tuple[str, list[Any] | str]] = []
    for name in ("core", "branch_tip", "ingest", "virtual"):
        try:
            mod = _load(name)
            if mod is None:
                out.append((name, "not available"))
                continue
            if name == "branch_tip":
                rows = _branch_tip_rows(mod, sz)
            elif name == "ingest" and smoke:
                # it starts a cluster of its own and builds NetCDF files: too slow for the
                # CI smoke run (tests/test_benchmarks_smoke.py has a time limit)
                out.append((name, "skipped at --smoke size (python benchmarks/ingest.py "
                                  "--smoke runs it)"))
                continue
            elif name == "ingest":
                rows = mod.run(smoke, workers=workers, workdir=str(workdir / "ingest"))
            elif name == "virtual":  # smoke: tiny and in-process (no cluster of its own)
                rows = mod.run(smoke, workers=workers, workdir=str(workdir / "virtual"))
            else:
                rows = mod.run(smoke)
            out.append((name, list(rows)))
        except Exception as e:  # a broken optional module must not hide the other rows
            traceback.print_exc()
            out.append((name, f"not available ({type(e).__name__}: {e})"))
        print(f"  done: benchmarks/{name}.py", flush=True)
    return out


def _value_of(r: dict[str, Any]) -> str:
    if "value" in r:
        return str(r["value"])
    if "ratio" in r:
        ours = r.get("ours_s", r.get("ours"))
        base = r.get("baseline_s")
        return f"{ours} s vs {base} s, {float(r['ratio']):.2f}x"
    ours = r.get("ours")
    if isinstance(ours, float):
        ours = f"{ours:,.3f}" if abs(ours) < 100 else f"{ours:,.0f}"
    return f"{ours} {r.get('unit', '')}".strip()


def _target_of(r: dict[str, Any]) -> str:
    t = r.get("target")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return f">= {t}x"
    return "" if t is None else str(t)


def small_commit_rows(sz: Sizes, workdir: Path) -> list[dict[str, Any]] | str:
    """The rows of ``benchmarks/small_commits.py`` (merge + commit of forks beside Icechunk,
    a one-chunk commit's requests), or the reason there are none."""
    try:
        mod = _load("small_commits")
        if mod is None:
            return "not available"
        return list(mod.run(sz.label != "full", workdir=str(workdir)))
    except Exception as e:  # a broken optional module must not hide the other rows
        traceback.print_exc()
        return f"not available ({type(e).__name__}: {e})"


# ------------------------------------------------------------------------------ issue 24
# Icechunk 2.3.0's commit figures in issue 24 (this run does not build 1M refs in Icechunk)
ICECHUNK_COMMIT_S = {100_000: 0.134, 1_000_000: 1.41}


def issue_table(cases: list[Case], small: list[dict[str, Any]] | str,
                commits: list[CommitResult],
                imported: list[tuple[str, list[Any] | str]]) -> None:
    """Every row of issue 24's table with its ratio and target, from this run."""
    rows: list[tuple[str, str, str, str, str, str, bool | None]] = []
    for c in cases:
        if c.issue_row:
            ok = c.target is None or c.ratio >= c.target
            rows.append((f"{c.name} [{c.kind}]", f"{c.ice_s:.2f} s", f"{c.plain_s:.2f} s",
                         "-", f"{c.ratio:.2f}x plain", f">= {c.target:.1f}x plain", ok))
    if isinstance(small, str):
        rows.append(("merge + commit of forks (benchmarks/small_commits.py)", small, "", "",
                     "", "<= Icechunk", None))
    else:
        for r in small:
            if "ours_ms" in r:
                measured = r["icechunk_source"].startswith("Icechunk ") and \
                    "not installed" not in r["icechunk_source"]
                ic = f"{r['icechunk_ms']:.1f} ms" + ("" if measured else " (issue 24)")
                rows.append((r["name"], f"{r['ours_ms']:.1f} ms", "", ic,
                             f"{r['ratio']:.2f}x Icechunk", "<= Icechunk", bool(r["ok"])))
            else:
                rows.append((r["name"], str(r["value"]).split(" (")[0], "", "", "",
                             str(r["target"]), None))
    for cm in commits:
        ref = ICECHUNK_COMMIT_S.get(cm.refs)
        if ref is not None:
            rows.append((f"commit of {cm.refs:,} changed refs", f"{cm.commit_s:.3f} s", "",
                         f"{ref:.3f} s (issue 24)", f"{ref / cm.commit_s:.2f}x Icechunk",
                         "<= Icechunk", cm.commit_s <= ref))
    for name, got in imported:
        if name != "ingest":
            continue
        if isinstance(got, str):
            rows.append(("ingest 60 ERA5-like NetCDF4 files", got, "", "", "", ">= 1.0x plain",
                         None))
            continue
        for r in got:
            if r.get("target") is not None:
                rows.append((str(r["name"]), f"{float(r['ours_s']):.2f} s",
                             f"{float(r['baseline_s']):.2f} s", "-",
                             f"{float(r['ratio']):.2f}x plain",
                             f">= {float(r['target']):.1f}x plain", bool(r["ok"])))
    if not rows:
        return
    print("Issue 24's rows (this run; Icechunk: measured when importable, else issue 24's "
          "figures, labelled)")
    w = max(len(r[0]) for r in rows) + 2
    print(f"  {'workload':<{w}}{'icechunk_dist':>16}{'plain Zarr':>12}{'Icechunk':>22}"
          f"{'ratio':>19}{'target':>16}  status")
    for name, ours, plain, ic, ratio, target, ok in rows:
        print(f"  {name:<{w}}{ours:>16}{plain:>12}{ic:>22}{ratio:>19}{target:>16}  "
              f"{_status(ok)}")
    print()


# ------------------------------------------------------------------------------ report
def _mib(n: float) -> str:
    return f"{n / MIB:,.1f}"


def _status(ok: bool | None) -> str:
    return "-" if ok is None else ("MET" if ok else "MISSED")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="icechunk_dist benchmark (not a test)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI smoke run)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--repeat", type=int, default=None,
                   help="repetitions of each write/read comparison (median is reported)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--only", nargs="+", default=None,
                   choices=["write", "s3", "small", "read", "merge", "commits",
                            "imported"],
                   help="run only these parts (read needs write)")
    p.add_argument("--skip-writes", action="store_true",
                   help="only the in-process merge/commit parts and the imported rows")
    args = p.parse_args(argv)
    sz = SMOKE if args.smoke else Sizes()
    if args.repeat is not None:
        sz.repeat = args.repeat
    parts = set(args.only or ["write", "s3", "small", "read", "merge", "commits",
                              "imported"])
    if args.skip_writes:
        parts -= {"write", "s3", "small", "read"}

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
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; scratch dir {workdir}")
    print(f"  cluster: LocalCluster, {args.workers} worker processes x "
          f"{args.threads_per_worker} thread(s); zarr default codecs (zstd) on both sides; "
          f"median of {sz.repeat}, order alternated")
    sys.stdout.flush()

    cases: list[Case] = []
    merges: list[MergeResult] = []
    commits: list[CommitResult] = []
    imported: list[tuple[str, list[Any] | str]] = []
    small_rows: list[dict[str, Any]] | str = []
    local = Backend(workdir)
    chunk_kib = sz.bulk_chunk * sz.bulk_chunk * 4 // 1024
    try:
        with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                          processes=True, dashboard_address=None) as cluster, \
                Client(cluster):
            if parts & {"write", "s3", "small", "read"}:
                # warm up: imports, worker-side caches, first-compute costs for both sides
                bench_write(Case("warmup", "", 0, False), local, (512, 512), 128, (128, 128),
                            1, "warmup")
            shape = square_shape(sz.bulk_bytes, sz.bulk_chunk)
            one = (sz.bulk_chunk, sz.bulk_chunk)
            mib = shape[0] * shape[1] * 4 / MIB
            nblocks = shape[0] // one[0] * (shape[1] // one[1])
            if parts & {"write", "read"}:
                # issue 24's shape: 1-D, 1 MiB chunks, one dask block per chunk
                c1 = sz.bulk_chunk_1d
                n1 = max(1, sz.bulk_bytes // (4 * c1))
                c = Case(f"bulk 1-D, {c1 * 4 // 1024} KiB chunks, 1 block/chunk, local disk",
                         f"{n1 * c1 * 4 / MIB:,.0f} MiB ({n1 * c1:,},) float32, chunks "
                         f"({c1:,},), one dask block per chunk ({n1:,} blocks; defaults on "
                         "both sides: store_dask groups runs of blocks per task, "
                         "dask.array.to_zarr rechunks to array.chunk-size)", 1.0, False)
                c.issue_row = "write"
                cases.append(c)
                kept = bench_write(c, local, (n1 * c1,), (c1,), (c1,), sz.repeat, "bulk1d",
                                   keep="read" in parts)
                print(f"  done: {c.summary()}", flush=True)
                if "read" in parts:
                    r = Case("read via dask, local disk",
                             "the 1-D array above, da.from_zarr(...).sum(), warm page cache",
                             1.0, False)
                    r.issue_row = "read"
                    cases.append(r)
                    bench_read(r, *kept, sz.repeat)
                    print(f"  done: {r.summary()}", flush=True)
                local.cleanup("bulk1d")
            if "write" in parts:
                c = Case(f"bulk 2-D, {chunk_kib} KiB chunks, 1 block/chunk, local disk",
                         f"{mib:,.0f} MiB {shape}, chunks {one}, one dask block per chunk "
                         f"({nblocks:,} blocks; defaults on both sides: store_dask groups "
                         "runs of blocks per task, dask.array.to_zarr rechunks to "
                         "array.chunk-size)", 1.0, False)
                c.issue_row = "write"
                cases.append(c)
                bench_write(c, local, shape, sz.bulk_chunk, one, sz.repeat, "bulk1")
                print(f"  done: {c.summary()}", flush=True)
                c = Case(f"bulk 2-D, {chunk_kib} KiB chunks, 1 block/chunk, one task per "
                         "block",
                         f"as above with store_dask(blocks_per_task=1): {nblocks:,} write "
                         "tasks, shows the per-task cost; plain side unchanged", None, False,
                         blocks_per_task=1)
                cases.append(c)
                bench_write(c, local, shape, sz.bulk_chunk, one, sz.repeat, "bulk1t")
                print(f"  done: {c.summary()}", flush=True)
                big = (min(sz.big_block, shape[0]), min(sz.big_block, shape[1]))
                per = big[0] // one[0] * (big[1] // one[1])
                c = Case(f"bulk 2-D, {chunk_kib} KiB chunks, {big[0] * big[1] * 4 // MIB} MiB "
                         "blocks, local disk", f"{mib:,.0f} MiB {shape}, chunks {one}, blocks "
                         f"{big} ({per} chunks per block)", 1.0, True)
                cases.append(c)
                bench_write(c, local, shape, sz.bulk_chunk, big, sz.repeat, "bulk16")
                print(f"  done: {c.summary()}", flush=True)
            if "s3" in parts:
                s3shape = square_shape(sz.s3_bytes, sz.bulk_chunk)
                s3mib = s3shape[0] * s3shape[1] * 4 / MIB
                with moto_server() as moto:
                    c = Case(f"bulk 2-D, {chunk_kib} KiB chunks, 1 block/chunk, moto S3",
                             f"{s3mib:,.0f} MiB {s3shape}, chunks {one}, one block per chunk; "
                             "plain: zarr ObjectStore(obstore S3Store)", 1.0, False)
                    c.issue_row = "s3"
                    cases.append(c)
                    bench_write(c, moto, s3shape, sz.bulk_chunk, one, sz.repeat, "s3")
                print(f"  done: {c.summary()}", flush=True)
            if "small" in parts:
                cs = sz.small_chunk
                grid_cols = 100 if sz.small_chunks >= 10_000 else 20
                grid_rows = -(-sz.small_chunks // grid_cols)
                sshape = (grid_rows * cs, grid_cols * cs)
                rows_per_block = max(1, sz.small_block_chunks // grid_cols)
                sblock = (min(rows_per_block * cs, sshape[0]), sshape[1])
                n_small = grid_rows * grid_cols
                c = Case(f"small, {cs * cs * 4 // 1024} KiB chunks",
                         f"{n_small:,} chunks {sshape}, {sblock[0] // cs * grid_cols:,} chunks "
                         "per dask block", 0.9, False)
                cases.append(c)
                bench_write(c, local, sshape, cs, sblock, sz.repeat, "small")
                print(f"  done: {c.summary()}", flush=True)
            if "merge" in parts:
                for n in sz.forks:
                    merges.append(bench_merge(n, sz.refs_per_fork, workdir))
                    print(f"  done: merge of {n} forks", flush=True)
                for n in sz.commit_refs:
                    commits.append(bench_commit(n, workdir))
                    print(f"  done: commit of {n:,} refs", flush=True)
        if "commits" in parts:
            small_rows = small_commit_rows(sz, workdir)
            print("  done: benchmarks/small_commits.py", flush=True)
        if "imported" in parts:
            imported = imported_rows(sz, workdir, args.workers)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    # ---------------------------------------------------------------------------- table
    print()
    print("=" * 100)
    print("RESULTS")
    print("=" * 100)
    if cases:
        print("Distributed write and read vs plain Zarr (same cluster, source, blocks, chunks, "
              "codecs; medians)")
        w = max(len(c.name) for c in cases) + 2
        print(f"  {'case':<{w}}{'plain s':>9}{'ice s':>9}{'ratio':>8}{'target':>9}  status"
              "    kind")
        for c in cases:
            target = "-" if c.target is None else ">= " + format(c.target, ".1f") + "x"
            ok = None if c.target is None else c.ratio >= c.target
            print(f"  {c.name:<{w}}{c.plain_s:>9.2f}{c.ice_s:>9.2f}{c.ratio:>7.2f}x"
                  f"{target:>9}  {_status(ok):<9} {c.kind}")
        print("  (ratio = plain Zarr time / icechunk_dist time; icechunk_dist time = store_dask +"
              " merge + commit)")
        for c in cases:
            runs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(c.plain, c.ice, strict=True))
            commit = (f"; of which merge + commit (median) {statistics.median(c.ice_commit):.2f} s"
                      if c.ice_commit else "")
            print(f"    {c.name}: {c.config}; runs plain/ice s: {runs}{commit}")
        print()
    if merges:
        print("Merge + commit of forks built in-process "
              f"({sz.refs_per_fork:,} chunk refs per fork)")
        print(f"  {'forks':>7}{'refs':>11}{'merge s':>10}{'commit s':>10}{'total s':>10}"
              f"{'us/ref':>9}{'peak RSS MiB':>14}")
        for m in merges:
            print(f"  {m.forks:>7,}{m.refs:>11,}{m.merge_s:>10.3f}{m.commit_s:>10.3f}"
                  f"{m.total_s:>10.3f}{1e6 * m.total_s / m.refs:>9.2f}{_mib(m.peak_rss):>14}")
        print()
    if commits:
        print("Commit of one change-set (columnar, fake native chunk ids)")
        print(f"  {'refs':>11}{'commit s':>10}{'us/ref':>9}{'manifests':>11}"
              f"{'RSS before':>12}{'peak RSS':>10}")
        for cm in commits:
            print(f"  {cm.refs:>11,}{cm.commit_s:>10.3f}{1e6 * cm.commit_s / cm.refs:>9.2f}"
                  f"{cm.manifests:>11}{_mib(cm.rss_before):>12}{_mib(cm.peak_rss):>10}")
        print("  (RSS in MiB, driver process; the targeted merge/commit rows are "
              "benchmarks/core.py's below)")
        print()
    if small_rows:
        print("Small commits beside Icechunk (benchmarks/small_commits.py)")
        if isinstance(small_rows, str):
            print(f"  {small_rows}")
        else:
            for r in small_rows:
                if "ours_ms" in r:
                    print(f"  {r['name']}: icechunk_dist {r['ours_ms']:.2f} ms, Icechunk "
                          f"{r['icechunk_ms']:.2f} ms ({r['icechunk_source']}); target "
                          f"{r['target']}; {_status(r['ok'])}")
                else:
                    print(f"  {r['name']}: {r['value']}")
                print(f"      {r['config']}")
        print()
    if imported:
        print("Rows of benchmarks/core.py, benchmarks/branch_tip.py, benchmarks/ingest.py, "
              "benchmarks/virtual.py")
        for name, rows in imported:
            if isinstance(rows, str):
                print(f"  [{name}] {rows}")
                continue
            for r in rows:
                print(f"  [{name}] {r.get('name', '?')}: {_value_of(r)}; target "
                      f"{_target_of(r) or '-'}; {_status(r.get('ok'))}")
                if r.get("config"):
                    print(f"      {r['config']}")
        print()
    issue_table(cases, small_rows, commits, imported)
    if sz.label != "full":
        print("(smoke sizes: the MET/MISSED statuses are not meaningful at this scale)")
    print(f"Driver peak RSS over the whole run (ru_maxrss): {_mib(ru_maxrss())} MiB")
    print(f"Total benchmark time: {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
