"""Benchmark: virtual refs at archive scale (issue 22), and reading a virtual dataset.

Not a test. Two parts:

1. **Scale**: a job that records ``refs`` virtual chunk refs (1M and 10M) of one 3-D array
   (chunk grid ``refs/1000 x 10 x 100``, each of ``refs/1000`` source files holding 1,000
   chunks of 256 bytes) the distributed way: ``forks`` forks of one session, each task
   setting its share of the refs on a worker with ``store.set_virtual_refs_columns`` (the
   columnar bulk API; each ref carries its source's etag), a tree merge of the forks on the
   workers (fan-in 32: 100 forks -> 4 -> 1; one graph, so a merge starts when its inputs
   are set), the one fork left gathered to the driver and merged into the session, one
   commit. "set" ends when the last ref is set, "merge" when the session holds them all.
   Columns: set, merge, commit (wall seconds), the driver's peak RSS (sampled every 2 ms
   over the whole job, interpreter, dask client and scheduler included) and the time to
   read one chunk after the commit from a freshly opened repository (snapshot, one
   manifest split and one ranged read of a real source file). The comparison column is
   Icechunk 2.3.0's figures **quoted from issue 22** (measured there, one process, local
   disk, 100 forks; not measured in this run). Targets (10M): driver peak RSS < 1 GiB,
   commit < 5 s, and ahead of the quoted figures on every column they give.
2. **Read throughput**: ``files`` NetCDF4 files written by xarray (zlib + shuffle, explicit
   chunking); virtual refs built here from h5py's chunk index
   (``h5py.Dataset.id.get_chunk_info``: offsets and sizes), arrays with the matching Zarr
   codecs (``numcodecs.shuffle`` + ``numcodecs.zlib``). Reading the whole variable through
   dask (``xr.open_zarr(session.store).sum()``) against ``xr.open_mfdataset(files,
   parallel=True).sum()`` on the same cluster, the same dask chunks, median of ``repeat``
   alternating runs. Target: ratio (plain time / ours) >= 0.9x.

Usage::

    python benchmarks/virtual.py                 # 1M and 10M refs, read part (~3-5 min)
    python benchmarks/virtual.py --smoke         # tiny sizes, no cluster (seconds)
    python benchmarks/virtual.py --refs 1000000  # one size

``run(smoke) -> list[dict]`` returns the rows (name, value, target, ok, config) for
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/_rss.py beside this file, however this module is loaded (tests load it by path)
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _rss import PeakRSS  # noqa: E402

MIB = 1 << 20
CHUNK = 256  # bytes per virtual chunk (4 x 4 x 4 float32)
PER_FILE = 1000  # chunks per source file
FAN_IN = 32  # as icechunk_dist.dask's default split_every: 100 forks -> 4 -> 1

#: Icechunk 2.3.0, quoted from issue 22 (one process, local disk, 100 forks, merge, one
#: commit): refs -> (set s, merge s, commit s, peak RSS MiB). Not measured here.
ICECHUNK_2_3_0 = {
    1_000_000: (1.0, 0.29, 1.72, 1_080e6 / MIB),
    10_000_000: (10.3, 7.4, 33.6, 11.1e9 / MIB),
}
RSS_LIMIT_MIB = 1024.0  # 10M-ref job: driver peak RSS under 1 GiB
COMMIT_LIMIT_S = 5.0  # 10M-ref job: commit under 5 s
READ_TARGET = 0.9


# ------------------------------------------------------------------------------ helpers
def _url(prefix: str, i: int) -> str:
    return f"{prefix}f{i:07d}.bin"


def _set_refs(fork: Any, part: int, per: int, prefix: str, etags: dict[int, str]) -> Any:
    """Task: the refs ``[part*per, (part+1)*per)`` set through ``fork`` (columns built
    here, as an indexer on a worker would)."""
    lin = np.arange(part * per, (part + 1) * per, dtype=np.int64)
    first = int(lin[0]) // PER_FILE
    nfiles = int(lin[-1]) // PER_FILE - first + 1
    coords = np.stack([lin // PER_FILE, (lin // 100) % 10, lin % 100], axis=1)
    files = range(first, first + nfiles)
    failed = fork.store.set_virtual_refs_columns(
        "x", coords=coords, location_ids=lin // PER_FILE - first,
        offsets=(lin % PER_FILE) * CHUNK, lengths=np.full(len(lin), CHUNK, np.int64),
        locations=[_url(prefix, i) for i in files],
        etags=[etags.get(i, f'"{i:x}-synthetic"') for i in files])
    assert failed is None, failed[:5]
    return fork


def _merge(*forks: Any) -> Any:
    """Task: one fork holding the refs of ``forks`` (a level of the merge tree)."""
    out = forks[0].child()
    return out.merge(*forks)


class _Inline:
    """The executor interface of ``distributed.Client`` that the job uses, in-process (smoke
    runs: no cluster)."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        kw.pop("pure", None)
        return fn(*args, **kw)

    def wait(self, futures: Sequence[Any]) -> None:
        return None

    def gather(self, futures: Sequence[Any]) -> list[Any]:
        return list(futures)


class _Distributed:
    def __init__(self, client: Any) -> None:
        self.client = client

    def submit(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, **kw)

    def wait(self, futures: Sequence[Any]) -> None:
        from distributed import wait

        with self.client.as_current():
            wait(list(futures))

    def gather(self, futures: Sequence[Any]) -> list[Any]:
        # straight from the workers: through the scheduler (it runs in this process) the
        # bytes would be relayed, and held here twice
        return list(self.client.gather(list(futures), direct=True))


# ------------------------------------------------------------------------------ scale
def scale_job(refs: int, forks: int, work: Path, ex: Any) -> dict[str, float]:
    """One job of ``refs`` virtual refs; return its timings and the driver's peak RSS."""
    import zarr

    import icechunk_dist as icd

    root = work / f"scale-{refs}"
    shutil.rmtree(root, ignore_errors=True)
    src = root / "src"
    src.mkdir(parents=True)
    prefix = f"file://{src}/"
    # the one source file whose chunk is read back: real bytes, its real etag
    probe_file = refs // PER_FILE // 2
    payload = np.arange(PER_FILE * CHUNK // 4, dtype="<f4")
    (src / _url("", probe_file)).write_bytes(payload.tobytes())
    etags = {probe_file: str(icd.virtual.source_stat(_url(prefix, probe_file)).etag)}
    config = icd.RepositoryConfig()
    config.set_virtual_chunk_container(
        icd.VirtualChunkContainer(prefix, icd.local_filesystem_store(str(src))))
    auth = {prefix: icd.LocalFileSystemAccess}
    repo = icd.Repository.create(icd.local_filesystem_storage(str(root / "repo")), config,
                                 authorize_virtual_chunk_access=auth)
    session = repo.writable_session("main")
    grid = (refs // PER_FILE, 10, 100)
    zarr.create_array(session.store, name="x", shape=tuple(4 * g for g in grid),
                      chunks=(4, 4, 4), dtype="<f4", compressors=None, fill_value=0.0)
    session.commit("the array")
    session = repo.writable_session("main")
    per = refs // forks
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        sets = [ex.submit(_set_refs, session.fork(), i, per, prefix, etags)
                for i in range(forks)]
        # the merge tree runs on the workers down to one fork (one graph: a merge starts
        # as soon as its inputs are set): the driver receives one table and holds it once
        # (merging several here would concatenate them at commit)
        parts = sets
        while len(parts) > 1:
            parts = [ex.submit(_merge, *parts[i:i + FAN_IN])
                     for i in range(0, len(parts), FAN_IN)]
        ex.wait(sets)
        t1 = time.perf_counter()  # every ref is set on a worker
        (last,) = ex.gather(parts)
        del parts, sets
        session.merge(last)
        del last
        t2 = time.perf_counter()
        session.commit(f"{refs:,} virtual refs")
        t3 = time.perf_counter()
    del session
    gc.collect()
    # read one chunk from a freshly opened repository (cold: snapshot, one manifest split)
    t4 = time.perf_counter()
    fresh = icd.Repository.open(icd.local_filesystem_storage(str(root / "repo")),
                                authorize_virtual_chunk_access=auth)
    arr = zarr.open_array(fresh.readonly_session("main").store, path="x", mode="r")
    y, x = 3, 42
    got = arr[4 * probe_file:4 * probe_file + 4, 4 * y:4 * y + 4, 4 * x:4 * x + 4]
    t5 = time.perf_counter()
    j = (y * 100 + x) * CHUNK // 4
    assert np.array_equal(got.ravel(), payload[j:j + 64]), "read back the wrong bytes"
    shutil.rmtree(root, ignore_errors=True)
    return {"refs": refs, "set_s": t1 - t0, "merge_s": t2 - t1, "commit_s": t3 - t2,
            "peak_mib": mem.peak / MIB, "start_mib": mem.start / MIB,
            "read_ms": 1000 * (t5 - t4)}


def scale_rows(results: list[dict[str, float]], forks: int, where: str) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        n = int(r["refs"])
        quoted = ICECHUNK_2_3_0.get(n)
        ours = (r["set_s"], r["merge_s"], r["commit_s"], r["peak_mib"])
        ahead = None if quoted is None else all(a < b for a, b in zip(ours, quoted,
                                                                      strict=True))
        limits = n < 10_000_000 or (r["peak_mib"] < RSS_LIMIT_MIB
                                    and r["commit_s"] < COMMIT_LIMIT_S)
        ice = ("" if quoted is None else
               f"; Icechunk 2.3.0 (quoted from issue 22, not measured here): set "
               f"{quoted[0]:.1f} s, merge {quoted[1]:.2f} s, commit {quoted[2]:.2f} s, "
               f"peak RSS {quoted[3]:,.0f} MiB")
        rows.append({
            "name": f"virtual refs, {n:,}: set / merge / commit / peak RSS / read 1 chunk",
            "value": (f"{r['set_s']:.2f} s / {r['merge_s']:.2f} s / {r['commit_s']:.2f} s / "
                      f"{r['peak_mib']:,.0f} MiB / {r['read_ms']:.0f} ms"),
            "target": ("ahead of Icechunk on every column"
                       + ("; peak RSS < 1 GiB, commit < 5 s" if n >= 10_000_000 else "")),
            "ok": None if ahead is None else bool(ahead and limits),
            "config": (f"{forks} forks, tree merge fan-in {FAN_IN}, {where}; driver RSS "
                       f"before {r['start_mib']:,.0f} MiB{ice}"),
        })
    return rows


# ------------------------------------------------------------------------------ reads
def make_netcdf(src: Path, nfiles: int, steps: int, ny: int, nx: int) -> list[Path]:
    """NetCDF4 files written by xarray: one float32 variable, zlib + shuffle, one chunk
    per time step."""
    import xarray as xr

    files = []
    yy, xx = np.meshgrid(np.linspace(0, 6, ny), np.linspace(0, 12, nx), indexing="ij")
    rng = np.random.default_rng(0)
    for i in range(nfiles):
        t = np.arange(i * steps, (i + 1) * steps)
        base = (np.sin(yy)[None] * np.cos(xx)[None] * 20 + 280
                + t[:, None, None] * 0.01).astype("f4")
        noise = rng.standard_normal(base.shape).astype("f4") * 0.05
        ds = xr.Dataset({"t2m": (("time", "y", "x"), base + noise)},
                        coords={"time": t.astype("i8")})
        path = src / f"day{i:03d}.nc"
        ds.to_netcdf(path, engine="h5netcdf", encoding={"t2m": {
            "zlib": True, "shuffle": True, "complevel": 4, "chunksizes": (1, ny, nx)}})
        files.append(path)
    return files


def virtual_dataset(files: Sequence[Path], repo_dir: Path) -> Any:
    """A repository whose ``t2m`` array references the files' chunks (from h5py's chunk
    index) and whose ``time`` coordinate is native; returns it (authorized)."""
    import h5py
    import zarr
    from zarr.codecs.numcodecs import Shuffle, Zlib

    import icechunk_dist as icd

    src = files[0].parent
    prefix = f"file://{src}/"
    config = icd.RepositoryConfig()
    config.set_virtual_chunk_container(
        icd.VirtualChunkContainer(prefix, icd.local_filesystem_store(str(src))))
    repo = icd.Repository.create(icd.local_filesystem_storage(str(repo_dir)), config,
                                 authorize_virtual_chunk_access={
                                     prefix: icd.LocalFileSystemAccess})
    s = repo.writable_session("main")
    specs: list[Any] = []
    times: list[Any] = []
    steps = shape = None
    for i, path in enumerate(files):
        etag = icd.virtual.source_stat(f"{prefix}{path.name}").etag
        with h5py.File(path, "r") as f:
            d = f["t2m"]
            steps, shape, chunks = d.shape[0], d.shape, d.chunks
            times.append(f["time"][:])
            for k in range(d.id.get_num_chunks()):
                info = d.id.get_chunk_info(k)
                idx = [o // c for o, c in zip(info.chunk_offset, chunks, strict=True)]
                idx[0] += i * steps
                specs.append(icd.VirtualChunkSpec(idx, f"{prefix}{path.name}",
                                                  info.byte_offset, info.size,
                                                  etag_checksum=etag))
    assert shape is not None and steps is not None
    full = (len(files) * steps, *shape[1:])
    g = zarr.open_group(s.store, mode="w")
    g.create_array("t2m", shape=full, chunks=(1, *shape[1:]), dtype="<f4",
                   compressors=[Shuffle(elementsize=4), Zlib(level=4)], fill_value=None,
                   dimension_names=("time", "y", "x"))
    tarr = g.create_array("time", shape=(full[0],), chunks=(full[0],), dtype="<i8",
                          dimension_names=("time",))
    tarr[:] = np.concatenate(times)
    assert s.store.set_virtual_refs("t2m", specs) is None
    s.commit("virtual dataset")
    return repo


def read_ours(repo: Any, client: Any) -> float:
    import xarray as xr

    t = time.perf_counter()
    with client.as_current():
        ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False,
                          chunks={"time": 24})
        float(ds.t2m.sum().compute())
    return time.perf_counter() - t


def read_plain(files: Sequence[Path], client: Any) -> float:
    import xarray as xr

    t = time.perf_counter()
    with client.as_current():
        ds = xr.open_mfdataset(files, combine="nested", concat_dim="time", parallel=True,
                               engine="h5netcdf", chunks={"time": 24}, data_vars="minimal",
                               coords="minimal", compat="override")
        float(ds.t2m.sum().compute())
        ds.close()
    return time.perf_counter() - t


def read_rows(work: Path, client: Any, nfiles: int, repeat: int, grid: tuple[int, int]
              ) -> list[dict[str, Any]]:
    src = work / "netcdf"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    files = make_netcdf(src, nfiles, 24, *grid)
    repo = virtual_dataset(files, work / "vrepo")
    size = sum(p.stat().st_size for p in files)
    read_ours(repo, client)  # warm-up: imports and first use on the workers
    read_plain(files, client)
    ours: list[float] = []
    plain: list[float] = []
    for i in range(repeat):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            if side == 0:
                ours.append(read_ours(repo, client))
            else:
                plain.append(read_plain(files, client))
    o, p = statistics.median(ours), statistics.median(plain)
    shutil.rmtree(work / "vrepo", ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    return [{
        "name": f"read {nfiles} NetCDF4 files through dask: virtual dataset vs "
                "open_mfdataset(parallel=True)",
        "value": f"{o:.2f} s vs {p:.2f} s, {p / o:.2f}x",
        "target": f">= {READ_TARGET}x", "ok": p / o >= READ_TARGET,
        "config": (f"{nfiles} files x 24 x {grid[0]} x {grid[1]} float32, zlib+shuffle, one "
                   f"chunk per step, {size / 1e6:.0f} MB on disk; dask chunks of 24 steps; "
                   f"sum() on the cluster; median of {repeat}"),
    }]


# ------------------------------------------------------------------------------ entry
def run(smoke: bool = False, *, refs: Sequence[int] | None = None, forks: int | None = None,
        workers: int = 2, workdir: str | None = None, read: bool = True) -> list[dict[str, Any]]:
    """Run the benchmark; return one row per measured case."""
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bench-virtual-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if smoke:
            sizes, nf = list(refs or [20_000]), forks or 4
            results = [scale_job(n, nf, tmp, _Inline()) for n in sizes]
            return scale_rows(results, nf, "in-process (smoke: no cluster)")
        import cloudpickle
        from distributed import Client, LocalCluster

        # run.py loads this file under another module name: ship its functions by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        sizes, nf = list(refs or [1_000_000, 10_000_000]), forks or 100
        rows: list[dict[str, Any]] = []
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, \
                Client(cluster, set_as_default=False) as client:
            client.run(exec, "import zarr, icechunk_dist, xarray, h5netcdf")
            ex = _Distributed(client)
            scale_job(min(sizes), nf, tmp, ex)  # warm-up: first use on the workers
            results = [scale_job(n, nf, tmp, ex) for n in sizes]
            rows += scale_rows(results, nf, f"{workers} worker processes x 1 thread, local "
                                            "disk")
            if read:
                rows += read_rows(tmp, client, 24, 3, (361, 720))
        return rows
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, in-process")
    p.add_argument("--refs", type=int, nargs="+", default=None)
    p.add_argument("--forks", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-read", action="store_true", help="skip the read-throughput part")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    rows = run(args.smoke, refs=args.refs, forks=args.forks, workers=args.workers,
               workdir=args.workdir, read=not args.no_read)
    print("RESULTS: virtual refs at scale; reading a virtual dataset")
    print(f"  machine: {os.cpu_count()} cores; started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for r in rows:
        ok = "-" if r["ok"] is None else ("MET" if r["ok"] else "MISSED")
        print(f"  {r['name']}: {r['value']}; target {r['target']}; {ok}")
        print(f"      {r['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
