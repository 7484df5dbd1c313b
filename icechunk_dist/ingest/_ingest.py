"""``ingest``: files in, one commit per batch, safe re-runs.

The plan of one run:

1. expand the sources (paths, ``file://``/``s3://`` URLs, globs) and drop those that already
   landed on the branch (each ingestion commit records its inputs in its metadata under
   :data:`METADATA_KEY`; the branch's ancestry is walked);
2. summarize every remaining file *on the workers* (dims, variables, dtypes, packing,
   coordinate digests and the first/last value of each dimension coordinate);
3. sort the files along the concat dimension and check them against each other and against
   what the repository already holds, before anything is written;
4. per batch: create (first run) or resize (later runs) the arrays in a writable session on
   the driver, then every worker task opens its file and writes its region into a child fork
   of the session; the forks are merged pairwise on the workers, the driver merges the one
   result and commits once, rebasing if another writer landed meanwhile.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from icechunk_dist.errors import (
    ConflictError,
    IcechunkDistError,
    InvalidInputError,
    StorageError,
)
from icechunk_dist.ingest._readers import FileSummary, VarSummary, describe, open_source, summarize
from icechunk_dist.ingest._sources import SourceFile, expand_sources
from icechunk_dist.repository import Repository
from icechunk_dist.session import ForkSession, Session
from icechunk_dist.storage import Storage, from_url

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["METADATA_KEY", "IngestResult", "ingest"]

METADATA_KEY = "icechunk_dist.ingest"
"""Commit-metadata key under which each ingestion commit records its inputs."""

# encoding keys of the netCDF backends that mean nothing to Zarr (dropped before writing)
_NETCDF_ONLY = ("chunksizes", "contiguous", "zlib", "complevel", "shuffle", "fletcher32",
                "source", "original_shape", "preferred_chunks", "compression",
                "compression_opts", "szip_coding", "szip_pixels_per_block", "endian",
                "least_significant_digit", "quantize_mode", "significant_digits",
                "blosc_shuffle", "chunks", "compressor", "compressors", "filters",
                "serializer", "shards")


class IngestResult(msgspec.Struct, kw_only=True):
    """What :func:`ingest` did.

    Attributes
    ----------
    snapshot_ids
        The commits made, oldest first (one per batch; empty if nothing was new or for a
        dry run).
    ingested
        URLs of the files ingested (for a dry run: that would be ingested), in order.
    skipped
        URLs of the files skipped because they already landed on the branch.
    branch, group, concat_dim
        Where, and along which dimension.
    dry_run
        Whether this was a dry run.
    message
        A one-line summary (the CLI prints it).
    """

    snapshot_ids: list[str]
    ingested: list[str]
    skipped: list[str]
    branch: str
    group: str | None
    concat_dim: str | None
    dry_run: bool = False
    message: str = ""

    @property
    def nothing_new(self) -> bool:
        """True if every source had already landed (nothing was written)."""
        return not self.ingested


# ------------------------------------------------------------------------------ running tasks
def _merge_forks(*forks: ForkSession) -> ForkSession:
    """Task: merge forks into a new child (inputs are never mutated: retries see the same)."""
    first, *rest = forks
    if not rest:
        return first
    return first.child().merge(first, *rest)


class _Runner:
    """Runs tasks on a distributed client's workers, or in this process on threads."""

    def __init__(self, client: Any, progress: bool) -> None:
        self.client = client
        self.progress = progress

    def say(self, text: str) -> None:
        if self.progress:
            print(f"icechunk-dist ingest: {text}", flush=True)

    def _report(self, what: str, done: int, total: int, last: list[int]) -> None:
        if total < 2:
            return
        step = max(1, total // 10)
        if done == total or done - last[0] >= step:
            last[0] = done
            self.say(f"{what} {done}/{total}")

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *args: Any,
            what: str) -> list[Any]:
        """``[fn(item, *args) for item in items]`` on the workers, in order."""
        total, last = len(items), [0]
        if self.client is not None:
            from distributed import as_completed

            with self.client.as_current():
                futs = [self.client.submit(fn, item, *args, pure=False) for item in items]
                for done, _f in enumerate(as_completed(futs), 1):
                    self._report(what, done, total, last)
                return list(self.client.gather(futs))
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
            futures = [pool.submit(fn, item, *args) for item in items]
            out = []
            for done, f in enumerate(futures, 1):
                out.append(f.result())
                self._report(what, done, total, last)
        return out

    def write_and_merge(self, fn: Callable[..., ForkSession], units: Sequence[Any],
                        *args: Any, split_every: int, what: str) -> ForkSession:
        """Run ``fn(unit, *args)`` per unit (each returns a fork); merge the forks in a tree
        of fan-in ``split_every`` on the workers; return the one merged fork."""
        total, last = len(units), [0]
        if self.client is not None:
            from distributed import as_completed

            with self.client.as_current():
                writes = [self.client.submit(fn, u, *args, pure=False) for u in units]
                parts = writes
                while len(parts) > 1:  # the merge tree runs on the workers as writes finish
                    parts = [self.client.submit(_merge_forks, *parts[i:i + split_every],
                                                pure=False)
                             for i in range(0, len(parts), split_every)]
                for done, _f in enumerate(as_completed(writes), 1):
                    self._report(what, done, total, last)
                merged: ForkSession = parts[0].result()
                return merged
        forks: list[ForkSession] = self.map(fn, units, *args, what=what)
        while len(forks) > 1:
            forks = [_merge_forks(*forks[i:i + split_every])
                     for i in range(0, len(forks), split_every)]
        return forks[0]


def _resolve_client(client: Any) -> Any:
    if client is not None:
        return client
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


# ------------------------------------------------------------------------------ worker task
def _write_unit(unit: tuple[list[SourceFile], int], fork: ForkSession, concat_dim: str,
                group: str | None, storage_options: Mapping[str, Any] | None) -> ForkSession:
    """Task: open the unit's files, write them at their offset along ``concat_dim`` into a
    child fork of ``fork``, and return that child."""
    import xarray as xr

    sources, start = unit
    child = fork.child()
    parts = [open_source(s, storage_options, concat_dim=concat_dim) for s in sources]
    ds = parts[0] if len(parts) == 1 else xr.concat(
        parts, dim=concat_dim, data_vars="minimal", coords="minimal", compat="override",
        join="override", combine_attrs="override")
    ds = ds.drop_vars([n for n, v in ds.variables.items() if concat_dim not in v.dims])
    n = int(ds.sizes[concat_dim])
    ds.attrs = {}
    # xarray drops indexes from region writes; without its index the coordinate is written
    ds = ds.drop_indexes([d for d in ds.xindexes if d in ds.coords])
    try:
        ds.to_zarr(child.store, group=group, region={concat_dim: slice(start, start + n)},
                   consolidated=False, safe_chunks=False)
    except IcechunkDistError:
        raise
    except Exception as e:  # e.g. values that do not encode like the repository's
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        names = ", ".join(s.url for s in sources)
        raise InvalidInputError(f"{names}: cannot write into the repository: {msg}") from None
    return child


# ------------------------------------------------------------------------------ checks
def _landed(repo: Repository | None, branch: str, group: str | None
            ) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Inputs recorded by ingestion commits on the branch's ancestry (url -> record) and the
    concat dimension they used."""
    if repo is None:
        return {}, None
    branches = repo.list_branches()
    ref = branch if branch in branches else ("main" if "main" in branches else None)
    if ref is None:
        return {}, None
    out: dict[str, dict[str, Any]] = {}
    concat_dim = None
    for info in repo.ancestry(branch=ref):
        rec = info.metadata.get(METADATA_KEY) if info.metadata else None
        if not isinstance(rec, dict) or (rec.get("group") or None) != (group or None):
            continue
        if concat_dim is None and rec.get("concat_dim"):
            concat_dim = str(rec["concat_dim"])
        for f in rec.get("files") or ():
            if isinstance(f, dict) and "url" in f:
                out.setdefault(str(f["url"]), {**f, "snapshot": info.id})
    return out, concat_dim


def _sort_key(s: FileSummary, dim: str) -> Any:
    return s.first.get(dim)


def _sorted(summaries: list[FileSummary], dim: str) -> list[FileSummary]:
    by_url = sorted(summaries, key=lambda s: s.source.url)
    if any(dim not in s.first for s in by_url):
        return by_url
    try:
        return sorted(by_url, key=lambda s: _sort_key(s, dim))
    except TypeError:
        return by_url


def _fmt(v: Any) -> str:
    if isinstance(v, np.datetime64):
        return str(np.datetime_as_string(v))
    return str(v)


def _compare(name: str, ref: VarSummary, got: VarSummary, dim: str) -> str | None:
    """The difference between two variable descriptions, or None."""
    if got.dims != ref.dims:
        return f"variable {name!r} has dims {got.dims}, expected {ref.dims}"
    packed = ref.scale_factor is not None or ref.add_offset is not None
    if not packed and got.dtype != ref.dtype:
        return f"variable {name!r} has dtype {got.dtype}, expected {ref.dtype}"
    if (ref.encoded_dtype and got.encoded_dtype and got.encoded_dtype != ref.encoded_dtype
            and packed):
        return (f"variable {name!r} is stored as {got.encoded_dtype}, expected "
                f"{ref.encoded_dtype}")
    for attr in ("scale_factor", "add_offset"):
        a, b = getattr(ref, attr), getattr(got, attr)
        if (a is None) != (b is None) or (a is not None and b is not None
                                          and not math.isclose(a, b, rel_tol=1e-6)):
            return f"variable {name!r} has {attr} {b}, expected {a}"
    for d, n_ref, n_got in zip(ref.dims, ref.shape, got.shape, strict=True):
        if d != dim and n_ref != n_got:
            return f"variable {name!r} has {d}={n_got}, expected {d}={n_ref}"
    if dim not in ref.dims and ref.digest and got.digest and ref.digest != got.digest:
        what = "coordinate" if ref.is_coord else "variable"
        return f"{what} {name!r} (without {dim!r}) has different values"
    return None


def _check_against(s: FileSummary, ref: FileSummary, dim: str, against: str) -> None:
    url = s.source.url
    missing = sorted(set(ref.variables) - set(s.variables))
    extra = sorted(set(s.variables) - set(ref.variables))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks variable(s) {', '.join(missing)}")
        if extra:
            parts.append(f"has extra variable(s) {', '.join(extra)}")
        raise InvalidInputError(f"{url}: schema mismatch with {against}: {'; '.join(parts)}")
    for name, ref_var in ref.variables.items():
        diff = _compare(name, ref_var, s.variables[name], dim)
        if diff:
            raise InvalidInputError(f"{url}: schema mismatch with {against}: {diff}")


def _check_order(prev_last: Any, s: FileSummary, dim: str, after: str) -> None:
    first = s.first.get(dim)
    if prev_last is None or first is None:
        return
    try:
        bad = not first > prev_last
    except TypeError:
        return
    if bad:
        raise InvalidInputError(
            f"{s.source.url}: {dim} starts at {_fmt(first)}, not after the end of {after} "
            f"({_fmt(prev_last)}); files are appended along {dim!r} without overlap"
        )


def _infer_dim(s: FileSummary) -> str:
    if "time" in s.dims or "time" in s.scalar_coords:
        return "time"
    if len(s.unlimited) == 1:
        return s.unlimited[0]
    if len(s.dims) == 1:
        return next(iter(s.dims))
    raise InvalidInputError(
        f"{s.source.url}: cannot tell the concat dimension (dims: {', '.join(s.dims)}); "
        "give --concat-dim / concat_dim="
    )


# ------------------------------------------------------------------------------ the driver
def _existing(store: Any, group: str | None, dim: str) -> tuple[FileSummary | None, int]:
    """The repository's dataset as a summary (None if the group holds no arrays) and its
    length along ``dim``."""
    import xarray as xr
    import zarr

    try:
        g = zarr.open_group(store, path=group or "", mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return None, 0
    if not list(g.array_keys()):
        return None, 0
    ds = xr.open_zarr(store, group=group, consolidated=False, chunks=None)
    try:
        if dim not in ds.dims:
            raise InvalidInputError(
                f"the repository's dataset at {group or '/'} has no dimension {dim!r} "
                f"(dims: {', '.join(map(str, ds.dims))})"
            )
        dims, variables, first, last = describe(ds, dim)
        return (FileSummary(source=SourceFile(url="<repository>", size=0), dims=dims,
                            variables=variables, first=first, last=last),
                int(ds.sizes[dim]))
    finally:
        ds.close()


def _zarr_encoding(var: xr.Variable, chunks: tuple[int, ...]) -> dict[str, Any]:
    enc = {k: v for k, v in var.encoding.items() if k not in _NETCDF_ONLY}
    enc["chunks"] = chunks
    if var.dtype.kind in "mM" and "units" not in enc:
        # times without CF units: xarray would pick units from the (empty) template; pick
        # exact ones so that any later time step encodes without loss
        enc["units"] = ("nanoseconds since 1970-01-01" if var.dtype.kind == "M"
                        else "nanoseconds")
        enc["dtype"] = np.dtype("int64")
    return enc


def _create_dataset(session: Session, first: SourceFile, group: str | None, dim: str,
                    chunk: int, storage_options: Mapping[str, Any] | None) -> None:
    """Create the group's arrays (length 0 along ``dim``) from one file: metadata, CF
    encodings and the variables without ``dim`` (written here, on the driver)."""
    ds = open_source(first, storage_options, load=False, concat_dim=dim)
    try:
        tmpl = ds.isel({dim: slice(0, 0)})
        for name, var in tmpl.variables.items():
            full = ds.variables[name]
            chunks = tuple(chunk if d == dim else max(1, int(n))
                           for d, n in zip(full.dims, full.shape, strict=True))
            var.encoding = _zarr_encoding(full, chunks)
        tmpl.load()
        tmpl.to_zarr(session.store, group=group, mode="a", consolidated=False,
                     zarr_format=3)
    finally:
        ds.close()


def _resize(session: Session, group: str | None, dim: str, length: int) -> list[int]:
    """Resize every array with ``dim`` to ``length`` along it; return their chunk sizes
    along ``dim``."""
    import zarr

    g = zarr.open_group(session.store, path=group or "", mode="r+")
    chunks = []
    for _name, arr in g.arrays():
        names = tuple(arr.metadata.dimension_names or ())  # type: ignore[union-attr]
        if dim not in names:
            continue
        axis = names.index(dim)
        shape = list(arr.shape)
        shape[axis] = length
        arr.resize(tuple(shape))
        chunks.append(int(arr.chunks[axis]))
    return chunks


def _units(batch: list[FileSummary], start: int, dim: str, chunks: list[int]
           ) -> list[tuple[list[SourceFile], int]]:
    """Group consecutive files so that no two units write one chunk: a unit starts at a
    file whose offset is on a chunk boundary of every array."""
    units: list[tuple[list[SourceFile], int]] = []
    pos = start
    for s in batch:
        aligned = all(pos % c == 0 for c in chunks)
        if units and not aligned:
            units[-1][0].append(s.source)
        else:
            units.append(([s.source], pos))
        pos += s.dims[dim]
    return units


def _as_repo(repo_or_url: Repository | Storage | str | os.PathLike[str],
             storage_options: Mapping[str, Any],
             ) -> tuple[Repository | None, Storage]:
    if isinstance(repo_or_url, Repository):
        return repo_or_url, repo_or_url.storage
    storage = (repo_or_url if isinstance(repo_or_url, Storage)
               else from_url(repo_or_url, **storage_options))
    return (Repository.open(storage) if Repository.exists(storage) else None), storage


def ingest(
    repo_or_url: Repository | Storage | str | os.PathLike[str],
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    concat_dim: str | None = None,
    group: str | None = None,
    branch: str = "main",
    batch_size: int | None = None,
    message: str | None = None,
    client: Any = None,
    dry_run: bool = False,
    progress: bool = True,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    region: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    split_every: int = 8,
) -> IngestResult:
    """Ingest NetCDF/HDF5/GRIB files or Zarr stores into a repository, one commit per batch.

    The first run creates the repository (if missing) and the group; later runs append
    along ``concat_dim``. Files already landed on the branch (recorded in its commits'
    metadata) are skipped, so a failed run can simply be run again.

    Parameters
    ----------
    repo_or_url
        A :class:`~icechunk_dist.Repository`, a :class:`~icechunk_dist.storage.Storage` or a
        URL (path, ``file:///path``, ``s3://bucket/prefix``...: see
        :func:`icechunk_dist.storage.from_url`).
    sources
        Paths, directories, ``file://`` or ``s3://`` URLs, or globs of either.
    concat_dim
        Dimension to concatenate and append along (default: what earlier ingestions into the
        group used, else ``time`` if present, else the files' unlimited dimension).
    group
        Zarr group of the dataset (default: the root).
    branch
        Branch to commit to; created at ``main``'s tip if missing.
    batch_size
        Land every ``batch_size`` files as their own commit (default: all in one commit).
    message
        Commit message (default: a description of the files).
    client
        A ``distributed.Client`` (default: the current default client, else threads in this
        process).
    dry_run
        Check everything, write nothing, report what would be ingested.
    progress
        Print progress lines.
    endpoint_url, allow_http, region, storage_options
        S3 settings for the repository URL and for sources on S3 (``storage_options`` may
        hold ``access_key_id``/``secret_access_key``; without keys the environment is used).
    split_every
        Fan-in of the tree merge of the workers' forks.

    Returns
    -------
    IngestResult

    Raises
    ------
    InvalidInputError
        A missing, unreadable or corrupt file, an empty glob, or a schema mismatch (with the
        repository or between files): the message names the file and the difference. The
        branch is unchanged.
    StorageError
        If the repository or the sources' storage cannot be reached (worth retrying).
    ConflictError
        If another writer changed the same arrays and rebasing could not solve it.
    """
    if batch_size is not None and int(batch_size) < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    if split_every < 2:
        raise InvalidInputError("split_every must be at least 2")
    opts: dict[str, Any] = {"endpoint_url": endpoint_url, "allow_http": allow_http or None,
                            "region": region, **dict(storage_options or {})}
    opts = {k: v for k, v in opts.items() if v is not None}
    t0 = time.perf_counter()
    runner = _Runner(_resolve_client(client), progress)
    src_list = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    files = expand_sources(src_list, storage_options=opts)
    repo, storage = _as_repo(repo_or_url, opts)
    landed, recorded_dim = _landed(repo, branch, group)
    skipped: list[str] = []
    todo: list[SourceFile] = []
    for f in files:
        rec = landed.get(f.url)
        if rec is None:
            todo.append(f)
            continue
        if int(rec.get("size", f.size)) != f.size:
            raise InvalidInputError(
                f"{f.url}: changed since it was ingested in snapshot {rec['snapshot']} "
                f"(size {rec.get('size')} -> {f.size}); ingest a new file instead"
            )
        if rec.get("etag") and f.etag and rec["etag"] != f.etag:
            raise InvalidInputError(
                f"{f.url}: changed since it was ingested in snapshot {rec['snapshot']} "
                f"(etag {rec['etag']} -> {f.etag}); ingest a new file instead"
            )
        skipped.append(f.url)
    dim = concat_dim or recorded_dim

    def result(ids: list[str], done: list[str], text: str) -> IngestResult:
        return IngestResult(snapshot_ids=ids, ingested=done, skipped=skipped, branch=branch,
                            group=group, concat_dim=dim, dry_run=dry_run, message=text)

    if not todo:
        return result([], [], f"nothing new to ingest: all {len(files)} source file(s) "
                              f"already landed on branch {branch!r}")
    runner.say(f"{len(todo)} file(s) to ingest, {len(skipped)} already landed")
    if dim is None:  # one file, on a worker, tells the concat dimension
        dim = _infer_dim(_raise_bad(runner.map(summarize, todo[:1], None, opts,
                                               what="files opened"))[0])
    summaries = runner.map(summarize, todo, dim, opts, what="files checked")
    _raise_bad(summaries)
    for s in summaries:
        if dim not in s.dims:
            raise InvalidInputError(
                f"{s.source.url}: has no dimension {dim!r} to concatenate along "
                f"(dims: {', '.join(s.dims) or 'none'})"
            )
    summaries = _sorted(summaries, dim)
    tip_store = None
    if repo is not None and (branch in repo.list_branches() or "main" in repo.list_branches()):
        ref = branch if branch in repo.list_branches() else "main"
        tip_store = repo.readonly_session(ref).store
    existing, _n = _existing(tip_store, group, dim) if tip_store is not None else (None, 0)
    ref_summary = existing or summaries[0]
    against = f"the repository's dataset on {branch!r}" if existing else summaries[0].source.url
    prev_last, prev_name = (existing.last.get(dim) if existing else None), "the repository"
    for s in summaries:
        if s is not ref_summary:
            _check_against(s, ref_summary, dim, against)
        _check_order(prev_last, s, dim, prev_name)
        prev_last, prev_name = s.last.get(dim), s.source.url
    ordered = [s.source.url for s in summaries]
    if dry_run:
        n = sum(s.dims[dim] for s in summaries)
        return result([], ordered, f"dry run: would ingest {len(ordered)} file(s) "
                                   f"({n} steps along {dim!r}), skip {len(skipped)}")

    # -- write, batch by batch
    if repo is None:
        repo = Repository.open_or_create(storage)
    if branch not in repo.list_branches():
        repo.create_branch(branch, repo.lookup_branch("main"))
    chunk = math.gcd(*(s.dims[dim] for s in summaries)) or 1
    k = int(batch_size) if batch_size else len(summaries)
    batches = [summaries[i:i + k] for i in range(0, len(summaries), k)]
    ids: list[str] = []
    raced: list[str] = []  # files another job landed while we were writing them
    for b, batch in enumerate(batches, 1):
        suffix = f" (batch {b}/{len(batches)})" if len(batches) > 1 else ""
        for attempt in range(_RACE_ATTEMPTS):
            try:
                sid = _land_batch(repo, runner, batch, branch=branch, group=group, dim=dim,
                                  chunk=chunk, opts=opts, split_every=split_every,
                                  message=message, suffix=suffix)
            except ConflictError as e:
                # another writer changed the same arrays (e.g. an ingestion job racing us):
                # re-plan the batch at the new tip, skipping what that job landed
                if attempt == _RACE_ATTEMPTS - 1:
                    raise
                batch, gone = _replan(repo, batch, branch, group, dim, e)
                raced += gone
                runner.say(f"the branch moved under batch {b}; re-planned at the new tip"
                            f"{f' ({len(gone)} file(s) landed by another job)' if gone else ''}")
                if not batch:
                    sid = None
                    break
                continue
            break
        if sid is not None:
            ids.append(sid)
            if len(batches) > 1:
                runner.say(f"committed {sid} on {branch}{suffix}, {len(batch)} file(s)")
    if raced:
        skipped.extend(raced)
        ordered = [u for u in ordered if u not in set(raced)]
    elapsed = time.perf_counter() - t0
    return result(ids, ordered, f"ingested {len(ordered)} file(s) along {dim!r} in "
                                f"{len(ids)} commit(s) on branch {branch!r} ({elapsed:.1f} s); "
                                f"skipped {len(skipped)} already landed")


_RACE_ATTEMPTS = 5


def _land_batch(repo: Repository, runner: _Runner, batch: list[FileSummary], *, branch: str,
                group: str | None, dim: str, chunk: int, opts: Mapping[str, Any],
                split_every: int, message: str | None, suffix: str) -> str:
    """Create or resize the arrays, write the batch's files on the workers through forks,
    merge, commit once; return the snapshot id."""
    from icechunk_dist.conflicts import ConflictDetector

    session = repo.writable_session(branch)
    current, length = _existing(session.store, group, dim)
    if current is None:
        _create_dataset(session, batch[0].source, group, dim, chunk, opts)
    n_new = sum(s.dims[dim] for s in batch)
    chunks = _resize(session, group, dim, length + n_new)
    units = _units(batch, length, dim, chunks)
    fork = session.fork()
    merged = runner.write_and_merge(_write_unit, units, fork, dim, group, opts,
                                    split_every=split_every, what=f"files written{suffix}")
    session.merge(merged)
    meta = {METADATA_KEY: {"version": 1, "group": group, "concat_dim": dim,
                           "files": [s.source.record() for s in batch]}}
    text = message or (f"ingest {len(batch)} file(s) along {dim!r}"
                       f"{' into ' + group if group else ''}")
    return session.commit(text + suffix, meta, rebase_with=ConflictDetector())


def _replan(repo: Repository, batch: list[FileSummary], branch: str, group: str | None,
            dim: str, cause: ConflictError) -> tuple[list[FileSummary], list[str]]:
    """The batch without the files that landed meanwhile, checked against the new tip."""
    landed, _ = _landed(repo, branch, group)
    gone = [s.source.url for s in batch if s.source.url in landed]
    left = [s for s in batch if s.source.url not in landed]
    if not left:
        return [], gone
    existing, _n = _existing(repo.readonly_session(branch).store, group, dim)
    if existing is not None:
        against = f"the repository's dataset on {branch!r}"
        for s in left:
            _check_against(s, existing, dim, against)
        try:
            _check_order(existing.last.get(dim), left[0], dim, "the repository")
        except InvalidInputError as e:
            raise ConflictError(f"another writer appended to {group or '/'} while this "
                                f"ingestion ran, and {e}") from cause
    return left, gone


def _raise_bad(summaries: list[FileSummary]) -> list[FileSummary]:
    bad = [s for s in summaries if s.error]
    if not bad:
        return summaries
    more = f" (and {len(bad) - 1} more bad file(s))" if len(bad) > 1 else ""
    storage = [s for s in bad if s.error_kind == "storage"]
    if storage:
        raise StorageError(f"{storage[0].error}{more}")
    raise InvalidInputError(f"{bad[0].error}{more}")

