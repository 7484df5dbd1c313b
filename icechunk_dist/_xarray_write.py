"""The implementation of ``icechunk_dist.xarray.to_icechunk`` (import it from there).

xarray through forks: :func:`to_icechunk` writes a Dataset into a session, one commit.

The same call as Icechunk's ``icechunk.xarray.to_icechunk``::

    session = repo.writable_session("main")
    to_icechunk(ds, session)                      # metadata on the driver, data on workers
    session.commit("one commit")

How it works (see docs/xarray.md):

1. On the driver, xarray's own Zarr backend writes the metadata into the session: every
   array's ``zarr.json`` (created, resized for ``append_dim``, attributes, CF encodings such
   as time units, ``_FillValue``, ``scale_factor``/``add_offset``).
2. Variables held in memory (numpy) are written directly into the session.
3. Variables backed by dask are encoded lazily by xarray (packing, time encoding...), then
   written on the workers through forks of the session with
   :func:`icechunk_dist.dask.store_dask`, whose change-sets are merged by a tree reduction
   on the workers (``split_every`` at a time) and merged into the session.

Any scheduler works: a ``distributed`` client (the current one), dask's threaded scheduler,
or no dask at all for a numpy-only dataset. If anything fails, the session's uncommitted
changes are rolled back to what they were before the call, so a later commit never shows a
half-written dataset.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from icechunk_dist.errors import (
    IcechunkDistError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
)
from icechunk_dist.session import ForkSession, Session

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["open_dataset", "require_xarray", "session_for", "to_icechunk"]

_log = logging.getLogger(__name__)

ZarrWriteModes = Literal["w", "w-", "a", "a-", "r+"]
Region = Mapping[str, "slice | Literal['auto']"] | Literal["auto"] | None

Region_ = tuple[slice, ...]

_MODES = ("w", "w-", "a", "a-", "r+")
# keyword arguments of Dataset.to_zarr that keep their meaning here
_PASSTHROUGH = ("safe_chunks", "align_chunks", "write_empty_chunks")


def require_xarray() -> Any:
    try:
        import xarray
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise ImportError(
            "icechunk_dist.xarray needs xarray: pip install 'icechunk_dist[xarray]'"
        ) from e
    return xarray


def _choose_mode(mode: str | None, append_dim: Hashable | None, region: Any) -> str:
    if mode is None:
        if append_dim is not None:
            mode = "a"
        elif region is not None:
            mode = "r+"
        else:
            mode = "w-"
    if mode not in _MODES:
        raise InvalidInputError(
            f"to_icechunk: mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}"
        )
    if append_dim is not None and mode not in ("a", "a-"):
        raise InvalidInputError(
            f"to_icechunk: append_dim needs mode 'a' or 'a-' (or None), got {mode!r}"
        )
    if region is not None and mode not in ("a", "r+"):
        raise InvalidInputError(
            f"to_icechunk: region needs mode 'a' or 'r+' (or None), got {mode!r}"
        )
    if append_dim is not None and region is not None and region != "auto" and \
            append_dim in region:
        raise InvalidInputError(
            f"to_icechunk: dimension {append_dim!r} cannot be both append_dim and in region"
        )
    return mode


def _as_dataset(obj: Any) -> Any:
    xr = require_xarray()
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, xr.DataArray):
        from xarray.backends.api import DATAARRAY_NAME, DATAARRAY_VARIABLE

        # the convention of DataArray.to_zarr, so xr.open_dataarray reads it back
        if obj.name is None:
            return obj.to_dataset(name=DATAARRAY_VARIABLE)
        if obj.name in obj.coords or obj.name in obj.dims:
            ds = obj.to_dataset(name=DATAARRAY_VARIABLE)
            ds.attrs[DATAARRAY_NAME] = obj.name
            return ds
        return obj.to_dataset()
    raise InvalidInputError(
        f"to_icechunk writes an xarray Dataset or DataArray, got {type(obj).__name__}"
    )


def _is_dask(x: Any) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(x, da.Array)


class _CollectingWriter:
    """Stands in for xarray's ``ArrayWriter``: records every (source, target, region) that
    xarray's Zarr backend would write, without writing; :func:`to_icechunk` writes them."""

    def __init__(self) -> None:
        self.eager: list[tuple[Any, Any, Any]] = []
        self.lazy: list[tuple[Any, Any, Any]] = []

    def add(self, source: Any, target: Any, region: Any = None) -> None:
        if _is_dask(source):
            self.lazy.append((source, target, region))
        elif hasattr(source, "chunks") and callable(getattr(source, "compute", None)):
            raise InvalidInputError(
                f"to_icechunk writes numpy- or dask-backed variables, got a "
                f"{type(source).__name__} for {getattr(target, 'path', '?')!r}"
            )
        else:
            self.eager.append((source, target, region))

    def sync(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - not used
        return None


def _region_tuple(target: Any, region: Any) -> tuple[slice, ...]:
    if region is None:
        return tuple(slice(0, n) for n in target.shape)
    out = []
    for sl, n in zip(region, target.shape, strict=True):
        start, stop, _ = sl.indices(n)
        out.append(slice(start, stop))
    return tuple(out)


def _split_pending(session: Session, lazy: list[tuple[Any, Any, Any]]
                   ) -> tuple[list[tuple[Any, Any, Region_]], list[tuple[Any, Any, Region_]]]:
    """(pieces for the driver, pieces for the forks) of the dask-backed writes.

    Forks see the session's base snapshot and pending metadata, not its pending chunk
    writes: a block covering part of a chunk this session already wrote (uncommitted, e.g.
    the last chunk of an earlier append in the same session) would rewrite that chunk from
    stale data. Such partial boundary chunks along the one unaligned dimension are written
    on the driver, into the session (at most one chunk thick at each end); the rest goes
    through forks. Partial chunks along several dimensions at once are refused."""
    pending = session.status().updated_chunks if session.has_uncommitted_changes else {}
    driver: list[tuple[Any, Any, Region_]] = []
    forks: list[tuple[Any, Any, Region_]] = []
    for src, target, region in lazy:
        reg = _region_tuple(target, region)
        if not pending.get("/" + target.path.strip("/")):
            forks.append((src, target, reg))
            continue
        ragged = [d for d, (sl, c, n) in enumerate(zip(reg, target.chunks, target.shape,
                                                       strict=True))
                  if sl.start % c or (sl.stop % c and sl.stop != n)]
        if not ragged:
            forks.append((src, target, reg))
            continue
        if len(ragged) > 1:
            raise InvalidInputError(
                f"to_icechunk: {target.path!r} has uncommitted chunk writes in this session "
                "and this write covers parts of chunks along several dimensions: commit the "
                "session first (or write chunk-aligned regions)"
            )
        d = ragged[0]
        c, n = target.chunks[d], target.shape[d]
        lo, hi = reg[d].start, reg[d].stop
        head = min(hi, -(-lo // c) * c)
        tail = hi if (hi % c == 0 or hi == n) else max(head, (hi // c) * c)
        for a, b, where in ((lo, head, driver), (head, tail, forks), (tail, hi, driver)):
            if b <= a:
                continue
            idx = tuple(slice(a - lo, b - lo) if k == d else slice(None)
                        for k in range(src.ndim))
            sub = tuple(slice(a, b) if k == d else sl for k, sl in enumerate(reg))
            where.append((src[idx], target, sub))
    return driver, forks


def to_icechunk(
    obj: xr.Dataset | xr.DataArray,
    session: Session | ForkSession,
    *,
    group: str | None = None,
    mode: ZarrWriteModes | None = None,
    append_dim: Hashable | None = None,
    region: Region = None,
    encoding: Mapping[Any, Any] | None = None,
    split_every: int | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> None:
    """Write an xarray Dataset (or DataArray) into a writable session; commit it yourself.

    The call of Icechunk's ``icechunk.xarray.to_icechunk`` and of ``Dataset.to_zarr``:
    metadata goes into the session on the driver, numpy-backed variables are written there
    directly, dask-backed variables are written on the workers through forks of the session
    and merged back by a tree reduction (:func:`icechunk_dist.dask.store_dask`).

    Parameters
    ----------
    obj
        The Dataset or DataArray to write.
    session
        A writable :class:`~icechunk_dist.Session`. Nothing is visible to others until you
        call ``session.commit(...)`` (once, for the whole write). Or, as Icechunk allows, a
        :class:`~icechunk_dist.ForkSession` inside a task: the write then runs in that
        process through the fork, and the driver merges the returned forks.
    group
        Zarr group path to write to (default: the root).
    mode
        ``"w"`` create, overwriting what is there; ``"w-"`` create, fail if it exists;
        ``"a"`` overwrite variables that exist, create the others (with ``append_dim``:
        append along it); ``"a-"`` append only the variables that have ``append_dim``;
        ``"r+"`` modify existing values only (no metadata or shape change). Default: ``"a"``
        with ``append_dim``, ``"r+"`` with ``region``, otherwise ``"w-"``.
    append_dim
        Extend existing arrays along this dimension.
    region
        ``"auto"`` or a mapping ``{dim: slice or "auto"}``: the part of existing arrays to
        fill. Every variable must share a dimension with the region.
    encoding
        Per-variable encodings, e.g. ``{"t": {"dtype": "int16", "scale_factor": 0.01}}``.
    split_every
        Fan-in of the tree reduction that merges the workers' forks (default 8).
    progress
        Draw a progress bar on stderr while dask-backed variables are written. Default
        False: the call prints nothing (it logs to ``logging.getLogger("icechunk_dist")``).
    **kwargs
        ``safe_chunks``, ``align_chunks``, ``write_empty_chunks`` as in ``Dataset.to_zarr``;
        ``zarr_format`` (only 3), ``consolidated`` (only False/None), ``compute`` (only
        True) and ``chunkmanager_store_kwargs`` (ignored) are accepted for compatibility.

    Raises
    ------
    ReadOnlyError
        If ``session`` is read-only (for example already committed).
    InvalidInputError
        On a bad mode, region or encoding, an existing target with ``mode="w-"``, a
        variable missing with ``mode="r+"``, or a dataset that does not fit what is stored.
        xarray's and zarr's own ``ValueError``/``KeyError``/``TypeError``/
        ``FileExistsError`` are reported as this error.
    NotFoundError
        With ``mode="a"``/``"r+"`` or ``region`` where there is no dataset yet.
    ConflictError
        If two tasks wrote the same chunk (only with ``safe_chunks=False``).

    On any error the session's uncommitted changes are restored to what they were before the
    call: nothing of the failed write reaches a later commit.
    """
    xr = require_xarray()
    if isinstance(session, ForkSession):
        _write_into_fork(obj, session, group=group, mode=mode, append_dim=append_dim,
                         region=region, encoding=encoding, kwargs=kwargs)
        return
    if not isinstance(session, Session):
        raise InvalidInputError(
            f"to_icechunk writes into an icechunk_dist Session or ForkSession, got "
            f"{type(session).__name__}"
        )
    if session.read_only:
        raise ReadOnlyError("to_icechunk needs a writable session: " +
                            session.read_only_reason())
    concrete = _choose_mode(mode, append_dim, region)
    open_kwargs = _open_kwargs(kwargs)
    ds = _as_dataset(obj)
    savepoint = session.savepoint()
    try:
        _write(xr, ds, session, group=group, mode=concrete, append_dim=append_dim,
               region=region, encoding=encoding, split_every=split_every, progress=progress,
               open_kwargs=open_kwargs)
    except BaseException as e:
        session.rollback_to(savepoint)
        if isinstance(e, IcechunkDistError):
            raise
        if isinstance(e, FileNotFoundError):  # mode "a"/"r+" on nothing, or a missing group
            raise NotFoundError(f"to_icechunk: {e}") from e
        if isinstance(e, ValueError | KeyError | TypeError | FileExistsError):
            raise InvalidInputError(f"to_icechunk: {e}") from e
        raise


def _write_into_fork(obj: Any, fork: ForkSession, *, group: str | None, mode: Any,
                     append_dim: Hashable | None, region: Region, encoding: Any,
                     kwargs: dict[str, Any]) -> None:
    """``to_icechunk`` into a fork (Icechunk's nested use inside a task): the whole write
    runs here, in this process, through the fork's store (its dask-backed variables are
    computed with the synchronous scheduler: we may be inside a task already); merge the
    fork into its session afterwards. A fork whose write raised must not be merged.

    Raises
    ------
    InvalidInputError
        For bad arguments or data that does not fit (xarray's and zarr's errors).
    """
    import dask

    if kwargs.get("compute", True) is False:
        raise InvalidInputError("to_icechunk does not take compute=False")
    ds = _as_dataset(obj)
    try:
        with dask.config.set(scheduler="synchronous"):
            ds.to_zarr(fork.store, group=group, mode=mode, append_dim=append_dim,
                       region=region, encoding=encoding, consolidated=False,
                       **{k: v for k, v in kwargs.items() if k != "compute"})
    except IcechunkDistError:
        raise
    except FileNotFoundError as e:
        raise NotFoundError(f"to_icechunk: {e}") from e
    except (ValueError, KeyError, TypeError, FileExistsError) as e:
        raise InvalidInputError(f"to_icechunk: {e}") from e


def _open_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _PASSTHROUGH:
            out[key] = value
        elif key == "zarr_format" and value not in (None, 3):
            raise InvalidInputError("to_icechunk writes Zarr format 3 only")
        elif key == "consolidated" and value:
            raise InvalidInputError(
                "to_icechunk: consolidated metadata is not used (a session lists its keys)"
            )
        elif key == "compute" and value is not True:
            raise InvalidInputError(
                "to_icechunk always writes (compute=False is not supported): for a "
                "delayed write use icechunk_dist.dask.store_dask(..., compute=False)"
            )
        elif key not in ("zarr_format", "consolidated", "compute",
                         "chunkmanager_store_kwargs"):
            raise InvalidInputError(
                f"to_icechunk got an unexpected keyword argument {key!r}"
            )
    if "write_empty_chunks" in out:
        out["write_empty"] = out.pop("write_empty_chunks")
    return out


def _write(xr: Any, ds: xr.Dataset, session: Session, *, group: str | None, mode: str,
           append_dim: Hashable | None, region: Any, encoding: Mapping[Any, Any] | None,
           split_every: int | None, progress: bool, open_kwargs: dict[str, Any]) -> None:
    import importlib

    from xarray.backends.zarr import ZarrStore

    # xarray's own Zarr writing machinery (as Icechunk uses it); in writers.py since 2025.7
    try:
        writers: Any = importlib.import_module("xarray.backends.writers")
        validate_names, dump_to_store = writers._validate_dataset_names, writers.dump_to_store
    except (ImportError, AttributeError):
        api: Any = importlib.import_module("xarray.backends.api")
        validate_names, dump_to_store = api._validate_dataset_names, api.dump_to_store

    validate_names(ds)
    for v in ds.variables.values():  # zero-length dask arrays: as xarray's to_zarr does
        if v.size == 0:
            v.load()
    zstore: Any = ZarrStore.open_group(
        store=session.store, group=group, mode=mode,  # type: ignore[arg-type]
        zarr_format=3, append_dim=append_dim,
        write_region=region, consolidated=False, consolidate_on_close=False,
        **open_kwargs,
    )
    validate_region = getattr(zstore, "_validate_and_autodetect_region", None)
    if validate_region is not None:
        ds = validate_region(ds)
    enc = dict(encoding or {})
    zstore._validate_encoding(enc)
    writer = _CollectingWriter()
    # metadata of every array (created, resized for appends, attributes), on the driver
    dump_to_store(ds, zstore, writer, encoding=enc)
    # in-memory variables: straight into the session
    for source, target, reg in writer.eager:
        target[reg or ...] = source
    _log.info("to_icechunk: %d variable(s) written on the driver, %d dask-backed through "
              "forks, into group %r", len(writer.eager), len(writer.lazy), group or "/")
    if writer.lazy:
        _write_lazy(session, writer.lazy, split_every=split_every, progress=progress)


def _write_lazy(session: Session, lazy: list[tuple[Any, Any, Any]], *,
                split_every: int | None, progress: bool) -> None:
    import importlib

    import zarr

    from icechunk_dist.dask import store_dask

    dask: Any = importlib.import_module("dask")  # untyped

    on_driver, on_forks = _split_pending(session, lazy)
    if on_driver:  # thin slabs next to chunks this session wrote: computed, then written here
        values = dask.compute(*(src for src, _, _ in on_driver))
        for value, (_, target, reg) in zip(values, on_driver, strict=True):
            target[reg] = value
    if not on_forks:
        return
    fork = session.fork()
    targets = [zarr.open_array(fork.store, path=t.path, mode="r+") for _, t, _ in on_forks]
    merged = store_dask(sources=[s for s, _, _ in on_forks], targets=targets,
                        regions=[r for _, _, r in on_forks],
                        split_every=split_every, progress=progress)
    session.merge(merged)


def session_for(source: Any, *, branch: str | None = None, tag: str | None = None,
                snapshot_id: str | None = None,
                storage_options: Mapping[str, Any] | None = None,
                authorize_virtual_chunk_access: Mapping[str, Any] | None = None
                ) -> Session | ForkSession:
    """The session ``source`` names: a path or URL (opened with
    :func:`icechunk_dist.storage.from_url` and ``storage_options``), a ``Storage``, a
    ``Repository`` (a read-only session at ``branch``, ``tag`` or ``snapshot_id``; default
    the tip of ``main``), or a session or fork itself. A repository opened here is
    authorized to read the virtual chunk containers ``authorize_virtual_chunk_access``
    names (url prefix -> credentials, as ``Repository.open``).

    Raises
    ------
    InvalidInputError
        On a bad path or URL, unknown storage options, more than one of ``branch``, ``tag``
        and ``snapshot_id``, or these with a session.
    NotFoundError
        If there is no repository there, or the ref or snapshot does not exist.
    StorageError
        If the storage cannot be reached.
    """
    from icechunk_dist.repository import Repository
    from icechunk_dist.storage import Storage, from_url

    if sum(x is not None for x in (branch, tag, snapshot_id)) > 1:
        raise InvalidInputError("give at most one of branch=, tag= and snapshot_id=")
    if isinstance(source, Session | ForkSession):
        if branch is not None or tag is not None or snapshot_id is not None:
            raise InvalidInputError("branch=, tag= and snapshot_id= name a version of a "
                                    "repository; this is already a session")
        if storage_options or authorize_virtual_chunk_access:
            raise InvalidInputError("storage_options and authorize_virtual_chunk_access go "
                                    "with a path, URL or Storage, not a session")
        return source
    if isinstance(source, str | os.PathLike):
        source = from_url(source, **dict(storage_options or {}))
    elif storage_options:
        raise InvalidInputError("storage_options go with a path or URL")
    if isinstance(source, Storage):
        source = Repository.open(
            source, authorize_virtual_chunk_access=authorize_virtual_chunk_access)
    elif authorize_virtual_chunk_access:
        raise InvalidInputError("authorize_virtual_chunk_access goes with a path, URL or "
                                "Storage; authorize a Repository when you open it")
    if not isinstance(source, Repository):
        raise InvalidInputError(
            "expected a repository path or URL, a Storage, a Repository or a session, got "
            f"{type(source).__name__}"
        )
    return source.readonly_session(branch, tag=tag, snapshot_id=snapshot_id)


def open_dataset(source: Any, *, branch: str | None = None, tag: str | None = None,
                 snapshot_id: str | None = None, group: str | None = None,
                 chunks: Any = None, storage_options: Mapping[str, Any] | None = None,
                 authorize_virtual_chunk_access: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> xr.Dataset:
    """The xarray dataset in a repository or session, in one line, lazily with dask when it
    is installed::

        ds = open_dataset("s3://bucket/era5", tag="v1", storage_options={"region": "eu-west-1"})
        ds = open_dataset(repo.readonly_session("main"), group="era5")

    ``xr.open_dataset(url, engine="icechunk_dist", chunks={})`` is the same through xarray's
    backend entry point.

    Parameters
    ----------
    source
        A path or URL (``/data/repo``, ``file://``, ``s3://``, ``gs://``, ``az://``), a
        ``Storage``, a ``Repository``, or a session (read-only or writable) or fork.
    branch, tag, snapshot_id
        The version to open (at most one; default the tip of ``main``). Not with a session.
    group
        The Zarr group of the dataset (default: the root).
    chunks
        ``None`` (default): dask arrays with the Zarr chunks when dask is installed, numpy
        otherwise; other values as in ``xr.open_zarr``.
    storage_options
        Keywords of the storage factory for a path or URL (``region``, ``endpoint_url``,
        ``allow_http``, credentials...), as :func:`icechunk_dist.storage.from_url` takes.
    authorize_virtual_chunk_access
        For a path, URL or ``Storage``: the virtual chunk containers to read (url prefix
        -> credentials, as ``Repository.open``; docs/virtual.md).
    **kwargs
        Passed to ``xr.open_zarr`` (``decode_times``, ``drop_variables``...).

    Raises
    ------
    InvalidInputError
        On a bad source, URL or storage option, or more than one version named.
    NotFoundError
        If there is no repository, no such ref or snapshot, or no dataset at ``group``.
    StorageError
        If the storage cannot be reached.
    """
    xarray_mod = require_xarray()
    session = session_for(source, branch=branch, tag=tag, snapshot_id=snapshot_id,
                          storage_options=storage_options,
                          authorize_virtual_chunk_access=authorize_virtual_chunk_access)
    if chunks is None and _has_dask():
        chunks = {}  # dask arrays with the Zarr chunks
    try:
        ds: xr.Dataset = xarray_mod.open_zarr(session.store, group=group, consolidated=False,
                                              chunks=chunks, **kwargs)
    except (FileNotFoundError, KeyError) as e:
        where = group or "/"
        raise NotFoundError(f"no xarray dataset at group {where!r}: {e}") from None
    return ds


def _has_dask() -> bool:
    import importlib.util

    return importlib.util.find_spec("dask") is not None
