"""Local disk: plain file I/O for gets and puts, the root directory check, and the staging
files of writes that never finished.

A put writes a staging file ``<path>#<digits>`` and renames (or, for a create, hard-links) it
onto ``<path>``; obstore's LocalStore does the same for the keys it writes. Listings never show
staging names, so a writer killed between the two steps leaves a file that only
:func:`list_staged` finds (garbage collection deletes the old ones: docs/maintenance.md).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from icechunk_dist.errors import InvalidInputError, StorageError
from icechunk_dist.storage._base import ObjectExistsError, ObjectMeta, ObjectNotFoundError
from icechunk_dist.storage._inodes import link_spare, take_spare

__all__ = [
    "check_root",
    "is_empty_dir",
    "is_staging_key",
    "list_staged",
    "local_size",
    "put_fresh_local_file",
    "put_local_file",
    "read_local_file",
    "remove_staged",
    "root_problem",
]

# the name of a staging file: the object's file name, '#', digits (ours and obstore's)
_STAGING = re.compile(r"[^/]+#\d+")


def is_staging_key(key: str) -> bool:
    """Whether the last segment of ``key`` is a staging file name (``<name>#<digits>``)."""
    return _STAGING.fullmatch(key.rpartition("/")[2]) is not None


def root_problem(root: str) -> str | None:
    """Why ``root`` cannot be a storage directory (a file is at it or above it), or None."""
    path = root
    while True:
        if os.path.lexists(path):
            if os.path.isdir(path):
                return None
            what = "is a file" if path == root else f"is under {path!r}, which is a file"
            return f"{root!r} {what}, not a directory"
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def check_root(root: str) -> None:
    """Raise if ``root`` cannot be a storage directory.

    Raises
    ------
    InvalidInputError
        If a file is at ``root`` or at one of its parents.
    """
    problem = root_problem(root)
    if problem is not None:
        raise InvalidInputError(f"local storage at {problem}")


def _os_error(exc: OSError, root: str, key: str, op: str) -> Exception:
    """Our error for a failed file operation under ``root``: bad input when the root or the
    key's path is blocked (a file where a directory must be, or a directory where the object
    must be), else a storage failure."""
    problem = root_problem(root)
    if problem is not None:
        return InvalidInputError(f"local storage at {problem}")
    if isinstance(exc, IsADirectoryError) or (
        isinstance(exc, FileExistsError | PermissionError)
        and os.path.isdir(os.path.join(root, key))
    ):
        return InvalidInputError(
            f"cannot {op} object {key!r} in local filesystem at {root}: a directory of that "
            "name is in its place"
        )
    return StorageError(f"{op} of {key!r} in local storage failed: {exc}", key=key, cause=exc)


def put_local_file(root: str, key: str, data: bytes, *, create: bool = False,
                   parents: bool = True) -> None:
    """Write ``data`` as the object ``key`` under ``root`` atomically: a staging file
    (``<path>#<digits>``, which listings skip), then a rename over ``<path>`` or, with
    ``create``, a hard link that fails if ``<path>`` exists (exactly one of several racing
    creators wins), as obstore's LocalStore does.

    Missing parent directories are created, unless ``parents`` is false
    (``put(mode="replace")``).

    Raises
    ------
    ObjectExistsError
        With ``create``, if the object exists.
    ObjectNotFoundError
        Without ``parents``, if the object's directory does not exist.
    InvalidInputError
        If a file blocks the root or a directory is where the object must go.
    StorageError
        If the file system fails otherwise.
    """
    path = os.path.join(root, key)
    spare = take_spare(root)
    if spare is not None and _put_spare(spare, root, key, path, data, create=create,
                                        parents=parents):
        return
    staged = _staged_name(path)
    try:
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            if not parents:
                raise _no_directory(key) from None
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        if not create:
            os.replace(staged, path)
            return
        try:
            os.link(staged, path)
        except FileExistsError:
            if os.path.isdir(path):
                raise
            raise ObjectExistsError(f"object {key!r} in local storage already exists",
                                    key=key) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(staged)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise _os_error(exc, root, key, "put") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _staged_name(path: str) -> str:
    return f"{path}#{int.from_bytes(os.urandom(7), 'little')}"


def _no_directory(key: str) -> ObjectNotFoundError:
    return ObjectNotFoundError(f"the directory of {key!r} in local storage does not exist "
                               "(a replace never creates one)", key=key)


def _put_spare(fd: int, root: str, key: str, path: str, data: bytes, *, create: bool,
               parents: bool = True) -> bool:
    """:func:`put_local_file` into a spare unnamed inode (storage/_inodes.py): write it,
    then link it under ``path`` (a create: fails if ``path`` exists) or under a staging
    name renamed over ``path``. False, with nothing written, where the spare cannot be
    linked there (``path`` on another file system than ``root``): the caller then writes
    a staging file as usual."""
    target = path if create else _staged_name(path)
    try:
        try:
            _write_all(fd, data)
            try:
                link_spare(fd, target)
            except FileNotFoundError:  # the first object under its directory
                if not parents:
                    raise _no_directory(key) from None
                os.makedirs(os.path.dirname(path), exist_ok=True)
                link_spare(fd, target)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        if (isinstance(exc, FileExistsError) and create and exc.filename2 == target
                and not os.path.isdir(path)):
            raise ObjectExistsError(f"object {key!r} in local storage already exists",
                                    key=key) from None
        raise _os_error(exc, root, key, "put") from exc
    if not create:
        try:
            os.replace(target, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise _os_error(exc, root, key, "put") from exc
    return True


def put_fresh_local_file(root: str, key: str, data: bytes, *, create: bool = False) -> None:
    """Write ``data`` as the new object ``key`` under ``root`` in place: no staging file, no
    rename (``Storage.put(mode="fresh")``: a random name nobody reads before it is
    published). A failed write removes what it wrote; a writer killed mid-write leaves a
    partial, unreferenced object for garbage collection. ``create`` is implied (``O_EXCL``).

    Raises
    ------
    ObjectExistsError
        If the object exists (a fresh name never does).
    InvalidInputError
        If a file blocks the root or a directory is where the object must go.
    StorageError
        If the file system fails otherwise.
    """
    path = os.path.join(root, key)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o644)
    except FileExistsError:
        if os.path.isdir(path):
            raise _os_error(IsADirectoryError(path), root, key, "put") from None
        raise ObjectExistsError(f"object {key!r} in local storage already exists",
                                key=key) from None
    except OSError as exc:
        raise _os_error(exc, root, key, "put") from exc
    try:
        _write_all(fd, data)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise _os_error(exc, root, key, "put") from exc
    os.close(fd)


def read_local_file(root: str, key: str, op: str, start: int | None = None,
                    end: int | None = None, suffix: int | None = None) -> bytes:
    """The bytes of the object ``key`` under ``root`` (all of them, ``[start, end)`` clipped
    to the size, or the last ``suffix``).

    Raises
    ------
    ObjectNotFoundError
        If there is no such file (or a directory is in its place).
    InvalidInputError
        If a file blocks the root.
    StorageError
        If the file system fails otherwise.
    """
    path = os.path.join(root, key)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if suffix is not None:
                start, end = max(0, size - suffix), size
            lo = 0 if start is None else min(start, size)
            hi = size if end is None else min(end, size)
            parts: builtins.list[bytes] = []
            pos = lo
            while pos < hi:
                got = os.pread(fd, hi - pos, pos)
                if not got:  # truncated meanwhile
                    break
                parts.append(got)
                pos += len(got)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            os.close(fd)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        if isinstance(exc, NotADirectoryError):
            check_root(root)
        raise ObjectNotFoundError(f"object {key!r} in local storage not found",
                                  key=key) from None
    except OSError as exc:
        raise StorageError(f"{op} of {key!r} in local storage failed: {exc}", key=key,
                           cause=exc) from exc


def local_size(path: str) -> int:
    """The size of ``path``, 0 if it cannot be read (the read then reports why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def is_empty_dir(root: str) -> bool:
    """Whether ``root`` is missing or an empty directory.

    Raises
    ------
    InvalidInputError
        If a file blocks the root.
    """
    check_root(root)
    try:
        with os.scandir(root) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True


def list_staged(root: str, prefix: str) -> builtins.list[ObjectMeta]:
    """Every staging file under ``root`` whose key starts with ``prefix``, with its size and
    modification time (the last write of the writer that made it)."""
    base = os.path.join(root, prefix.rpartition("/")[0])
    out: builtins.list[ObjectMeta] = []
    for directory, _dirs, files in os.walk(base):
        for name in files:
            if _STAGING.fullmatch(name) is None:
                continue
            path = os.path.join(directory, name)
            key = os.path.relpath(path, root).replace(os.sep, "/")
            if not key.startswith(prefix):
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:  # renamed or removed meanwhile
                continue
            out.append(ObjectMeta(key=key, size=st.st_size,
                                  last_modified=datetime.fromtimestamp(st.st_mtime, UTC)))
    return out


def remove_staged(root: str, keys: Iterable[str]) -> int:
    """Delete the staging files ``keys`` under ``root`` (missing ones are no error); return
    how many were asked.

    Raises
    ------
    InvalidInputError
        If a key does not name a staging file.
    StorageError
        If a file cannot be deleted.
    """
    count = 0
    for key in keys:
        if not is_staging_key(key):
            raise InvalidInputError(f"{key!r} is not a staging file name (<name>#<digits>)")
        count += 1
        try:
            os.unlink(os.path.join(root, key))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageError(f"delete of staging file {key!r} in local storage failed: "
                               f"{exc}", key=key, cause=exc) from exc
    return count
