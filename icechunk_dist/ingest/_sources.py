"""Sources: expanding paths, ``file://`` and ``s3://`` URLs and globs into files to ingest.

Only source files are parsed here; a repository URL is :func:`icechunk_dist.storage.from_url`'s.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote, urlparse

import msgspec

from icechunk_dist.errors import InvalidInputError, NotFoundError, StorageError
from icechunk_dist.storage import Storage, from_url

__all__ = ["SourceFile", "expand_sources", "s3_source_storage"]

_GLOB = set("*?[")
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


class SourceFile(msgspec.Struct, frozen=True, kw_only=True):
    """One input: where it is and what identifies its version.

    Attributes
    ----------
    url
        ``/absolute/path`` for local files and Zarr directories, ``s3://bucket/key`` on S3.
    size
        Bytes (for a Zarr directory: the sum over its files).
    etag
        The object store's version tag (S3), if any.
    mtime
        Last modification, seconds since the epoch.
    kind
        ``"file"`` (NetCDF, HDF5, GRIB) or ``"zarr"`` (a Zarr v2/v3 store).
    """

    url: str
    size: int
    etag: str | None = None
    mtime: float | None = None
    kind: str = "file"

    def record(self) -> dict[str, Any]:
        """What a commit's metadata records about this input."""
        out: dict[str, Any] = {"url": self.url, "size": self.size}
        if self.etag is not None:
            out["etag"] = self.etag
        if self.mtime is not None:
            out["mtime"] = self.mtime
        return out


def _has_glob(text: str) -> bool:
    return any(c in _GLOB for c in text)


def s3_source_storage(bucket: str, storage_options: Mapping[str, Any] | None = None
                      ) -> Storage:
    """The storage over the whole of ``bucket`` that S3 sources are read through."""
    return from_url(f"s3://{bucket}", **dict(storage_options or {}))


def _is_zarr_dir(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, m)) for m in _ZARR_MARKERS
    )


def _local(path: str, given: str) -> SourceFile:
    path = os.path.abspath(os.path.expanduser(path))
    if _is_zarr_dir(path):
        size, mtime = 0, 0.0
        for root, _dirs, files in os.walk(path):
            for f in files:
                st = os.stat(os.path.join(root, f))
                size += st.st_size
                mtime = max(mtime, st.st_mtime)
        return SourceFile(url=path, size=size, mtime=mtime, kind="zarr")
    try:
        st = os.stat(path)
    except OSError:
        raise InvalidInputError(f"source {given!r}: no such file") from None
    return SourceFile(url=path, size=st.st_size, mtime=st.st_mtime, kind="file")


def _expand_local(text: str, given: str) -> list[SourceFile]:
    if _has_glob(text):
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        matches = [m for m in matches if os.path.isfile(m) or _is_zarr_dir(m)]
        if not matches:
            raise InvalidInputError(f"source {given!r}: the glob matches no files")
        return [_local(m, given) for m in matches]
    path = os.path.expanduser(text)
    if os.path.isdir(path) and not _is_zarr_dir(path):
        names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        entries = [os.path.join(path, n) for n in names]
        entries = [e for e in entries if os.path.isfile(e) or _is_zarr_dir(e)]
        if not entries:
            raise InvalidInputError(f"source {given!r}: the directory holds no files")
        return [_local(e, given) for e in entries]
    return [_local(path, given)]


def _expand_s3(url: str, storage_options: Mapping[str, Any] | None) -> list[SourceFile]:
    parsed = urlparse(url)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise InvalidInputError(f"source {url!r}: S3 sources are s3://bucket/key")
    storage = s3_source_storage(bucket, storage_options)
    if not _has_glob(key):
        try:
            if key.endswith("/"):
                raise NotFoundError(key)
            meta = run_head(storage, key)
        except NotFoundError:
            metas = storage.list_sync(key.rstrip("/") + "/")
            if any(m.key.rsplit("/", 1)[-1] in _ZARR_MARKERS for m in metas):
                return [SourceFile(url=f"s3://{bucket}/{key.rstrip('/')}",
                                   size=sum(m.size for m in metas), kind="zarr",
                                   mtime=max(m.last_modified.timestamp() for m in metas))]
            depth = key.rstrip("/").count("/") + 1
            children = [m for m in metas if m.key.count("/") == depth
                        and not m.key.rsplit("/", 1)[-1].startswith(".")]
            if children:  # a "directory": the objects directly under it
                return sorted((SourceFile(url=f"s3://{bucket}/{m.key}", size=m.size,
                                          etag=m.etag, mtime=m.last_modified.timestamp())
                               for m in children), key=lambda f: f.url)
            raise InvalidInputError(f"source {url!r}: no such object") from None
        return [SourceFile(url=f"s3://{bucket}/{key}", size=meta.size, etag=meta.etag,
                           mtime=meta.last_modified.timestamp())]
    segments = key.split("/")
    fixed = []
    for s in segments:
        if _has_glob(s):
            break
        fixed.append(s)
    prefix = "/".join(fixed) + "/" if fixed else ""
    recursive = "**" in key
    out = []
    for m in storage.list_sync(prefix):
        if not recursive and m.key.count("/") != key.count("/"):
            continue
        if fnmatchcase(m.key, key.replace("**/", "*").replace("**", "*")):
            out.append(SourceFile(url=f"s3://{bucket}/{m.key}", size=m.size, etag=m.etag,
                                  mtime=m.last_modified.timestamp()))
    if not out:
        raise InvalidInputError(f"source {url!r}: the glob matches no objects")
    return sorted(out, key=lambda s: s.url)


def run_head(storage: Storage, key: str) -> Any:
    """``storage.head(key)``, synchronously."""
    from icechunk_dist._sync import run

    return run(storage.head(key))


def expand_sources(sources: Iterable[str | os.PathLike[str]], *,
                   storage_options: Mapping[str, Any] | None = None) -> list[SourceFile]:
    """Expand paths, ``file://``/``s3://`` URLs and globs of either into files (each once).

    A local directory that is not a Zarr store stands for the files in it. S3 globs are
    expanded by listing the bucket through :mod:`icechunk_dist.storage`.

    Raises
    ------
    InvalidInputError
        If a source is missing, a glob or directory matches nothing, or the URL scheme is
        unsupported; the message names the source.
    StorageError
        If S3 cannot be reached.
    """
    out: dict[str, SourceFile] = {}
    given: list[Any] = list(sources)
    if not given:
        raise InvalidInputError("no sources given: name files, directories, globs or URLs")
    for src in given:
        if isinstance(src, os.PathLike):
            src = os.fspath(src)
        if not isinstance(src, str) or not src:
            raise InvalidInputError(f"source must be a non-empty string, got {src!r}")
        parsed = urlparse(src)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise InvalidInputError(f"source {src!r}: file URLs must be file:///path")
            found = _expand_local(unquote(parsed.path), src)
        elif parsed.scheme == "s3":
            try:
                found = _expand_s3(src, storage_options)
            except StorageError:
                raise
        elif parsed.scheme == "" or (len(parsed.scheme) == 1 and src[1:3] == ":\\"):
            found = _expand_local(src, src)
        else:
            raise InvalidInputError(
                f"source {src!r}: unsupported scheme; use a path, file:// or s3:// URL"
            )
        for f in found:
            out.setdefault(f.url, f)
    return list(out.values())
