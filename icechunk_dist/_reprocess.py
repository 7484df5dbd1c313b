"""Reprocessing: the dataset at a ref, through a function, onto a branch as one commit.

The Python side of ``icechunk-dist map`` (public names in ``icechunk_dist.xarray``)::

    from icechunk_dist.xarray import reprocess
    result = reprocess(repo, source="main", branch="daily", func=my_module.to_daily)
    result = reprocess(repo, source="v1", branch="by-time", rechunk={"time": 1, "lat": -1})

1. The dataset at ``source`` (a branch, a tag or a snapshot id) is opened lazily with dask
   from a read-only session: nothing is loaded on the driver.
2. ``func(ds) -> Dataset`` builds the new (lazy) dataset; ``rechunk`` re-chunks it (dask and
   Zarr chunks, ``-1`` for a whole dimension).
3. ``branch`` is created at ``source`` if it does not exist; the result is written with
   :func:`icechunk_dist.xarray.to_icechunk` (chunks on the workers through forks, one tree
   merge) replacing the group on that branch, and committed as exactly one commit, with
   rebase if another writer moved the branch meanwhile. ``source`` and every other branch
   are unchanged. On failure nothing is committed and a branch created by the call is
   removed again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from icechunk_dist._xarray_write import require_xarray, to_icechunk
from icechunk_dist.conflicts import ConflictDetector
from icechunk_dist.errors import IcechunkDistError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import xarray as xr

    from icechunk_dist.repository import Repository

__all__ = ["MapResult", "load_function", "parse_rechunk", "rechunk", "reprocess"]

DatasetFunc = Callable[["xr.Dataset"], "xr.Dataset"]


@dataclass(frozen=True)
class MapResult:
    """What :func:`reprocess` did.

    Attributes
    ----------
    snapshot_id
        The one commit it made on ``branch``.
    branch
        The branch written.
    source_snapshot
        The snapshot id ``source`` resolved to (the data that was read).
    created_branch
        True if ``branch`` did not exist and was created at ``source``.
    variables
        Names of the variables written (data variables and coordinates).
    """

    snapshot_id: str
    branch: str
    source_snapshot: str
    created_branch: bool
    variables: tuple[str, ...]


def load_function(spec: str) -> DatasetFunc:
    """The callable named by ``"package.module:function"`` (``function`` may be dotted,
    ``module:Class.method``).

    Raises
    ------
    InvalidInputError
        If ``spec`` is malformed, the module cannot be imported, the attribute is missing or
        is not callable.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise InvalidInputError(f"--func must be 'module:function', got {spec!r}")
    mod_name, attr = spec.split(":")
    if not mod_name or not attr:
        raise InvalidInputError(f"--func must be 'module:function', got {spec!r}")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise InvalidInputError(f"--func {spec}: cannot import module {mod_name!r}: {e}") \
            from None
    except Exception as e:  # the module itself raised while importing
        raise InvalidInputError(
            f"--func {spec}: importing {mod_name!r} raised {type(e).__name__}: {e}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidInputError(
                f"--func {spec}: module {mod_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise InvalidInputError(
            f"--func {spec}: {attr!r} is a {type(obj).__name__}, not a callable"
        )
    func: DatasetFunc = obj
    return func


def parse_rechunk(spec: str | Mapping[str, Any]) -> dict[str, int]:
    """``"time=1,lat=-1"`` (or a mapping) as ``{"time": 1, "lat": -1}``; ``-1`` means the
    whole dimension in one chunk.

    Raises
    ------
    InvalidInputError
        On a malformed item, a size that is not an integer, or a size of 0 or below -1.
    """
    items: list[tuple[str, Any]]
    if isinstance(spec, str):
        items = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            dim, eq, size = part.partition("=")
            if not eq or not dim.strip():
                raise InvalidInputError(f"--rechunk items are dim=size, got {part!r}")
            items.append((dim.strip(), size.strip()))
    elif isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        raise InvalidInputError(f"rechunk must be 'dim=n,...' or a mapping, got {spec!r}")
    if not items:
        raise InvalidInputError("rechunk needs at least one dim=size")
    out: dict[str, int] = {}
    for dim, size in items:
        try:
            n = int(size)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"rechunk size of {dim!r} must be an integer (or -1), got {size!r}"
            ) from None
        if n == 0 or n < -1:
            raise InvalidInputError(f"rechunk size of {dim!r} must be >= 1 or -1, got {n}")
        out[dim] = n
    return out


def rechunk(ds: xr.Dataset, chunks: str | Mapping[str, Any]) -> xr.Dataset:
    """``ds`` re-chunked to ``chunks`` (``{"time": 1, "lat": -1}`` or ``"time=1,lat=-1"``;
    ``-1`` is the whole dimension): the dask chunks, and the Zarr chunks it will be written
    with (the old ``chunks``/``preferred_chunks`` encodings are dropped; other encodings,
    such as dtype, fill value, scale/offset and time units, are kept).

    Raises
    ------
    InvalidInputError
        On a malformed spec or a dimension the dataset does not have.
    """
    spec = parse_rechunk(chunks)
    missing = sorted(set(spec) - set(ds.dims))
    if missing:
        raise InvalidInputError(
            f"rechunk: the dataset has no dimension {', '.join(map(repr, missing))} "
            f"(dimensions: {', '.join(map(str, ds.dims))})"
        )
    out = ds.copy(deep=False)
    for v in out.variables.values():
        for key in ("chunks", "preferred_chunks", "shards"):
            v.encoding.pop(key, None)
    return out.chunk({d: (n if n != -1 else -1) for d, n in spec.items()})


_rechunk = rechunk  # reprocess's parameter ``rechunk`` shadows the function


def _drop_chunk_encodings(ds: xr.Dataset) -> xr.Dataset:
    """Zarr chunks follow the dask chunks of the result (a function may re-chunk)."""
    out = ds.copy(deep=False)
    for v in out.variables.values():
        if v.chunks is not None:
            for key in ("chunks", "preferred_chunks", "shards"):
                v.encoding.pop(key, None)
    return out


def _resolve(repo: Repository, ref: str) -> str:
    if ref in repo.list_branches():
        return repo.lookup_branch(ref)
    if ref in repo.list_tags():
        return repo.lookup_tag(ref)
    try:
        return repo.lookup_snapshot(ref).id
    except (NotFoundError, InvalidInputError):
        raise NotFoundError(
            f"--from {ref!r} is not a branch, a tag or a snapshot id of this repository"
        ) from None


def _describe(func: Any) -> str:
    if isinstance(func, str):
        return func
    mod = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or type(func).__name__
    return f"{mod}:{name}"


def reprocess(
    repo: Repository,
    *,
    source: str,
    branch: str,
    func: DatasetFunc | str | None = None,
    rechunk: str | Mapping[str, Any] | None = None,
    group: str | None = None,
    message: str | None = None,
    client: Any = None,
    split_every: int | None = None,
    progress: bool = False,
) -> MapResult:
    """Open the dataset at ``source``, apply ``func`` and/or ``rechunk``, and write the result
    to ``branch`` as exactly one commit (``icechunk-dist map``).

    Parameters
    ----------
    repo
        The repository.
    source
        A branch, a tag or a snapshot id to read (never changed).
    branch
        The branch to write (created at ``source`` if missing). Must not be ``source``.
    func
        ``Dataset -> Dataset`` (a callable or ``"module:function"``), applied to the lazy
        dataset; it should stay lazy (dask) so the work runs on the workers.
    rechunk
        ``{"time": 1, "lat": -1}`` or ``"time=1,lat=-1"``: re-chunk the result.
    group
        The Zarr group of the dataset (default: the root), read and written.
    message
        Commit message (default: names the function/rechunk and the source).
    client
        A ``distributed`` client to run on (default: the current client, else the threaded
        scheduler).
    split_every, progress
        As in :func:`icechunk_dist.xarray.to_icechunk` (``progress=True`` draws a progress
        bar on stderr; by default nothing is printed).

    Returns
    -------
    MapResult

    Raises
    ------
    InvalidInputError
        Neither ``func`` nor ``rechunk``; a bad function (missing module, not callable,
        raised, returned something else than a Dataset); a bad rechunk spec; ``branch``
        equal to ``source``.
    NotFoundError
        If ``source`` is unknown, or there is no dataset at ``group``.
    RebaseFailedError
        If another writer changed the same data on ``branch`` meanwhile.

    On any error nothing is committed and a branch the call created is deleted again.
    """
    xr = require_xarray()
    if func is None and rechunk is None:
        raise InvalidInputError("map needs a function (--func module:function), a --rechunk "
                                "spec, or both")
    if not isinstance(branch, str) or not branch:
        raise InvalidInputError("map needs a target branch (--to-branch)")
    if branch == source:
        raise InvalidInputError(
            f"--to-branch {branch!r} is the --from ref: map leaves the source unchanged; "
            "write to another branch (and reset or merge it yourself)"
        )
    fn = load_function(func) if isinstance(func, str) else func
    if fn is not None and not callable(fn):
        raise InvalidInputError(f"func must be callable, got {type(fn).__name__}")
    spec = parse_rechunk(rechunk) if rechunk is not None else None
    source_id = _resolve(repo, source)

    reader = repo.readonly_session(snapshot_id=source_id)
    try:
        ds = xr.open_zarr(reader.store, group=group, consolidated=False, chunks={})
    except (FileNotFoundError, KeyError) as e:
        raise NotFoundError(
            f"no xarray dataset at group {group or '/'!r} of {source!r}: {e}"
        ) from None
    out = ds
    if fn is not None:
        try:
            out = fn(ds)
        except IcechunkDistError:
            raise
        except Exception as e:
            raise InvalidInputError(
                f"--func {_describe(func)} raised {type(e).__name__}: {e}"
            ) from None
        if not isinstance(out, xr.Dataset):
            raise InvalidInputError(
                f"--func {_describe(func)} must return an xarray Dataset, got "
                f"{type(out).__name__}"
            )
        out = _drop_chunk_encodings(out)
    if spec is not None:
        out = _rechunk(out, spec)

    created = branch not in repo.list_branches()
    if created:
        repo.create_branch(branch, source_id)
    try:
        session = repo.writable_session(branch)
        what = " + ".join(
            p for p in (_describe(func) if func is not None else "",
                        f"rechunk {','.join(f'{d}={n}' for d, n in (spec or {}).items())}"
                        if spec is not None else "") if p
        )
        meta = {"icechunk_dist.map": {"source": source, "source_snapshot": source_id,
                                      "func": _describe(func) if func is not None else None,
                                      "rechunk": spec, "group": group}}
        if client is not None:
            with client.as_current():
                to_icechunk(out, session, group=group, mode="w", split_every=split_every,
                            progress=progress)
        else:
            to_icechunk(out, session, group=group, mode="w", split_every=split_every,
                        progress=progress)
        snap = session.commit(message or f"map {what} from {source}", metadata=meta,
                              rebase_with=ConflictDetector())
    except BaseException:
        if created:
            try:
                if repo.lookup_branch(branch) == source_id:
                    repo.delete_branch(branch)
            except IcechunkDistError:  # pragma: no cover - best effort
                pass
        raise
    return MapResult(snapshot_id=snap, branch=branch, source_snapshot=source_id,
                     created_branch=created,
                     variables=tuple(sorted(str(k) for k in out.variables)))
