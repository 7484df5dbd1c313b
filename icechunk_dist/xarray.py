"""xarray through forks: write Datasets into sessions, open them, reprocess and rechunk.

- :func:`to_icechunk` (the call of Icechunk's ``icechunk.xarray.to_icechunk``): metadata
  into the session on the driver, dask-backed variables on the workers through forks,
  merged by a tree reduction; commit once yourself. Guide: docs/xarray.md.
- :func:`open_dataset`: the dataset of a repository (path or URL, at a branch, tag or
  snapshot) or of a session, lazily with dask. ``xr.open_dataset(url,
  engine="icechunk_dist")`` does the same through :class:`IcechunkBackendEntrypoint`, the
  xarray backend this package registers.
- :func:`reprocess` and :func:`rechunk`: open the dataset at a ref, transform it, write the
  result to a branch as exactly one commit (the Python side of ``icechunk-dist map``).
  Guide: docs/reprocessing.md.

Needs the optional extra: ``pip install 'icechunk_dist[xarray]'`` (and ``[dask]`` for
dask-backed datasets and reprocessing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

try:
    from xarray.backends import BackendEntrypoint
except ImportError as e:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        f"icechunk_dist.xarray needs xarray: pip install 'icechunk_dist[xarray]' ({e})"
    ) from e

from icechunk_dist._reprocess import MapResult, load_function, parse_rechunk, rechunk, reprocess
from icechunk_dist._xarray_write import open_dataset, session_for, to_icechunk
from icechunk_dist.errors import NotFoundError
from icechunk_dist.repository import Repository
from icechunk_dist.session import ForkSession, Session

__all__ = [
    "IcechunkBackendEntrypoint",
    "MapResult",
    "load_function",
    "open_dataset",
    "parse_rechunk",
    "rechunk",
    "reprocess",
    "to_icechunk",
]


class IcechunkBackendEntrypoint(BackendEntrypoint):  # type: ignore[misc]
    """The xarray backend ``engine="icechunk_dist"``::

        ds = xr.open_dataset("s3://bucket/repo", engine="icechunk_dist", chunks={})
        ds = xr.open_dataset("/data/repo", engine="icechunk_dist", tag="v1", group="era5")

    Opens the tip of ``main``, or ``branch=``, ``tag=`` or ``snapshot_id=``, read-only;
    ``group=`` picks the Zarr group and ``storage_options=`` are the keywords of
    :func:`icechunk_dist.storage.from_url` (``region``, ``endpoint_url``, ``allow_http``,
    credentials...). The first argument may also be a ``Repository`` or a session.
    ``authorize_virtual_chunk_access=`` authorizes virtual chunk containers, as
    ``Repository.open`` (docs/virtual.md).

    xarray names dask arrays after the path and the arguments, so two opens of one branch
    at different commits get the same names: to compute both in one graph, name versions by
    ``snapshot_id=`` (or use :func:`open_dataset`).
    """

    description = "Open a branch, tag or snapshot of an icechunk_dist repository"
    open_dataset_parameters = (
        "filename_or_obj", "drop_variables", "mask_and_scale", "decode_times",
        "concat_characters", "decode_coords", "use_cftime", "decode_timedelta",
        "branch", "tag", "snapshot_id", "group", "storage_options",
        "authorize_virtual_chunk_access",
    )

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        concat_characters: bool = True,
        decode_coords: bool = True,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
        branch: str | None = None,
        tag: str | None = None,
        snapshot_id: str | None = None,
        group: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        authorize_virtual_chunk_access: Mapping[str, Any] | None = None,
    ) -> Any:
        """The dataset at ``group`` of the named version (see the class docstring).

        Raises
        ------
        InvalidInputError
            On a bad path, URL or storage option, or more than one version named.
        NotFoundError
            If there is no repository, no such ref or snapshot, or no dataset at ``group``.
        StorageError
            If the storage cannot be reached.
        """
        from xarray.backends.zarr import ZarrBackendEntrypoint

        session = session_for(filename_or_obj, branch=branch, tag=tag,
                              snapshot_id=snapshot_id, storage_options=storage_options,
                              authorize_virtual_chunk_access=authorize_virtual_chunk_access)
        store: Any = session.store  # a zarr Store, which xarray's annotation leaves out
        try:
            return ZarrBackendEntrypoint().open_dataset(
                store, group=group, mode="r", consolidated=False, zarr_format=3,
                drop_variables=drop_variables, mask_and_scale=mask_and_scale,
                decode_times=decode_times, concat_characters=concat_characters,
                decode_coords=decode_coords, use_cftime=use_cftime,
                decode_timedelta=decode_timedelta,
            )
        except (FileNotFoundError, KeyError) as e:
            raise NotFoundError(f"no xarray dataset at group {group or '/'!r}: {e}") from None

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Repositories and sessions (a path or URL needs ``engine="icechunk_dist"``: it
        cannot be told from a plain Zarr store without reading it)."""
        return isinstance(filename_or_obj, Repository | Session | ForkSession)
