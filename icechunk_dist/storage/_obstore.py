"""The one :class:`Storage` implementation, on obstore.

An :class:`ObstoreStorage` holds a :class:`StorageSpec` (what to connect to, as the user gave it)
and builds its obstore client lazily, once per process, so that it pickles as its spec and
survives ``os.fork``. Only the in-memory backend keeps its client for life (its data *is* the
client) and refuses to pickle.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import contextlib
import functools
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import UTC
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import obstore
import obstore.exceptions as obe
from obstore.store import MemoryStore

from icechunk_dist._sync import in_thread
from icechunk_dist.errors import InvalidInputError, NotFoundError, StorageError
from icechunk_dist.storage._base import (
    ObjectExistsError,
    ObjectMeta,
    PutMode,
    Storage,
    validate_key,
    validate_prefix,
)
from icechunk_dist.storage._local import (
    check_root,
    is_empty_dir,
    list_staged,
    local_size,
    put_fresh_local_file,
    put_local_file,
    read_local_file,
    remove_staged,
)
from icechunk_dist.storage._retry import (
    DEFAULT_RETRY,
    Attempts,
    RetryPolicy,
    is_transient,
    translate_error,
    with_retries,
)
from icechunk_dist.storage._spec import StorageSpec, make_store

if TYPE_CHECKING:
    from obstore import ObjectMeta as ObstoreMeta
    from obstore.store import ObjectStore

__all__ = ["ObstoreStorage", "check_runtime"]

T = TypeVar("T")

_DELETE_BATCH = 1000  # S3 DeleteObjects limit; also bounds memory for huge key iterables
_DELETE_CONCURRENCY = 16  # per-key deletes when a backend refuses bulk deletes of missing keys
_LIST_CHUNK = 1000
_SORTED_LISTINGS = frozenset({"s3", "gcs", "azure"})  # lexicographic: resumable with `offset`
_NO_SUFFIX_RANGES = frozenset({"azure"})  # object_store: "Azure does not support suffix range"
_NETWORK_BACKENDS = frozenset({"s3", "gcs", "azure"})
_PROBE_PREFIX = "probes"  # check_conditional_writes: one unique key, deleted right after
# puts up to this size on memory storage run synchronously on the caller's thread
_INLINE_PUT_BYTES = 256 * 1024
# local disk: reads and writes of objects up to this size run on the caller's thread (a
# page-cache read or write of 2 MiB costs less than the hop to a thread and back); larger
# ones run in a worker thread, so one large object never holds the event loop
_INLINE_LOCAL_BYTES = 2 * 1024 * 1024
# keys the local fast path handles: plain path characters, which obstore's LocalStore maps
# to the same file names unencoded (anything else goes through obstore)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._\-/]+")


# obstore runs its I/O on a process-wide tokio runtime that does not survive os.fork: a forked
# child hangs forever on its first obstore call once the parent has used the runtime. We track
# whether this process started it, so a child forked afterwards fails at once instead of hanging.
_runtime_pid: int | None = None
_EXIT_GRACE = 0.05  # seconds
_inherited_runtime = False


def _after_fork_in_child() -> None:
    global _inherited_runtime
    _inherited_runtime = _inherited_runtime or _runtime_pid is not None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def check_runtime(what: str) -> None:
    """Refuse obstore I/O in a process forked after its parent did some (it would hang);
    note that this process uses obstore's runtime.

    Raises
    ------
    StorageError
        In such a forked process.
    """
    global _runtime_pid
    if _inherited_runtime:
        raise StorageError(
            f"cannot use {what} in a process forked after its parent did storage I/O: "
            "obstore's I/O runtime does not survive os.fork. Start worker processes with "
            "multiprocessing.get_context('spawn') or 'forkserver' (Dask's default), or fork "
            "before the first storage operation"
        )
    if _runtime_pid is None:
        _runtime_pid = os.getpid()
        atexit.register(_let_runtime_settle)


def _let_runtime_settle() -> None:
    # After an async obstore call returns, its tokio worker still releases Python objects for a
    # moment; if interpreter finalization starts in that window the process dies with SIGABRT
    # (about 1 exit in 4 on obstore 0.12.1). A short pause at exit closes the window.
    time.sleep(_EXIT_GRACE)


def _restore(spec: StorageSpec) -> ObstoreStorage:
    return ObstoreStorage(spec)


def _is_range_error(exc: BaseException) -> bool:
    # obstore refuses ranges past the end (and every range of an empty object)
    return isinstance(exc, obe.GenericError) and "range" in str(exc).lower()


def _batches(keys: Iterable[str], size: int) -> Iterator[builtins.list[str]]:
    it = iter(keys)
    while batch := builtins.list(islice(it, size)):
        yield batch


class ObstoreStorage(Storage):
    """A :class:`Storage` on an obstore store described by a :class:`StorageSpec`.

    Build one through the ``*_storage`` factories of :mod:`icechunk_dist.storage`.
    """

    __slots__ = ("_pid", "_spec", "_store")

    #: backoff for transient failures (class-wide; tests may shorten it)
    retry_policy: RetryPolicy = DEFAULT_RETRY

    def __init__(self, spec: StorageSpec) -> None:
        self._spec = spec
        self._store: ObjectStore | None = None
        self._pid = -1
        if spec.backend == "memory":
            self._store, self._pid = MemoryStore(), os.getpid()

    # -- identity -----------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self._spec.backend

    @property
    def supports_pickle(self) -> bool:
        return self._spec.backend != "memory"

    def describe(self) -> str:
        s = self._spec
        prefix = s.option("prefix") or ""
        if s.backend == "local":
            return f"local filesystem at {s.option('path')}"
        if s.backend == "memory":
            return f"in-memory storage {s.token}"
        if s.backend == "s3":
            url = f"s3://{s.option('bucket')}/{prefix}".rstrip("/")
            endpoint = s.option("endpoint_url")
            return f"{url} at {endpoint}" if endpoint else url
        if s.backend == "gcs":
            url = f"gs://{s.option('bucket')}/{prefix}".rstrip("/")
        else:
            url = f"azure://{s.option('account')}/{s.option('container')}/{prefix}".rstrip("/")
        endpoint = s.option("endpoint_url")
        return f"{url} at {endpoint}" if endpoint else url

    def __repr__(self) -> str:
        return f"<Storage {self.describe()}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObstoreStorage):
            return NotImplemented
        return self._spec == other._spec

    def __hash__(self) -> int:
        return hash(self._spec)

    def __reduce__(self) -> tuple[Any, ...]:
        if not self.supports_pickle:
            raise InvalidInputError(
                "in-memory storage lives in one process and cannot be pickled; use "
                "local_filesystem_storage or s3_storage for multi-process work"
            )
        return (_restore, (self._spec,))

    def __copy__(self) -> ObstoreStorage:
        return self  # immutable: a copy would be a different in-memory repository

    def __deepcopy__(self, memo: dict[int, Any]) -> ObstoreStorage:
        return self

    def _client(self) -> ObjectStore:
        check_runtime(self.describe())
        store = self._store
        if store is None or (self._pid != os.getpid() and self._spec.backend != "memory"):
            # a client's connection pool and runtime do not survive fork: build a fresh one
            store = make_store(self._spec)
            self._store, self._pid = store, os.getpid()
        return store

    async def _io(self, call: Callable[[], Awaitable[T]], key: str | None, op: str) -> T:
        return await with_retries(
            call, backend=self._spec.backend, key=key, op=op, policy=self.retry_policy
        )

    def _local_root(self, key: str) -> str | None:
        """The root directory if the local fast path serves ``key`` (plain Python file I/O,
        no hop to obstore's runtime), else None."""
        if self._spec.backend != "local" or _PLAIN_KEY.fullmatch(key) is None:
            return None
        root: str = self._spec.option("path")
        return root

    async def _read_local(self, root: str, key: str, op: str, start: int | None = None,
                          end: int | None = None, suffix: int | None = None) -> bytes:
        want = (suffix if suffix is not None
                else (end - start) if start is not None and end is not None else None)
        if (want if want is not None
                else local_size(os.path.join(root, key))) <= _INLINE_LOCAL_BYTES:
            return read_local_file(root, key, op, start, end, suffix)
        return await in_thread(read_local_file, root, key, op, start, end, suffix)

    # -- reads --------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        validate_key(key)
        local = self._local_root(key)
        if local is not None:
            return await self._read_local(local, key, "get")
        store = self._client()
        if self._spec.backend == "memory":
            async def inline_get() -> bytes:
                return bytes(obstore.get(store, key).bytes())

            return await self._io(inline_get, key, "get")

        async def call() -> bytes:
            result = await obstore.get_async(store, key)
            return bytes(await result.bytes_async())

        return await self._io(call, key, "get")

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        validate_key(key)
        if start < 0 or end < 0:
            raise InvalidInputError(f"byte range [{start}, {end}) of {key!r} is negative")
        if end <= start:
            return b""
        local = self._local_root(key)
        if local is not None:
            return await self._read_local(local, key, "get_range", start, end)
        store = self._client()

        async def call() -> bytes:
            try:
                return bytes(await obstore.get_range_async(store, key, start=start, end=end))
            except obe.GenericError as exc:
                if not _is_range_error(exc):
                    raise
            size = (await obstore.head_async(store, key))["size"]
            if start >= size:
                return b""
            return bytes(await obstore.get_range_async(store, key, start=start, end=min(end, size)))

        return await self._io(call, key, "get_range")

    async def get_suffix(self, key: str, length: int) -> bytes:
        validate_key(key)
        if length < 0:
            raise InvalidInputError(f"suffix length {length} of {key!r} is negative")
        if length == 0:
            return b""
        local = self._local_root(key)
        if local is not None:
            return await self._read_local(local, key, "get_suffix", suffix=length)
        store = self._client()

        async def call() -> bytes:
            if self._spec.backend not in _NO_SUFFIX_RANGES:
                try:
                    result = await obstore.get_async(
                        store, key, options={"range": {"suffix": length}}
                    )
                    return bytes(await result.bytes_async())
                except obe.GenericError as exc:
                    if not _is_range_error(exc):
                        raise
            # the size first: a backend without suffix ranges, or a suffix past the start
            size = (await obstore.head_async(store, key))["size"]
            if size == 0:
                return b""
            start = max(0, size - length)
            return bytes(await obstore.get_range_async(store, key, start=start, end=size))

        return await self._io(call, key, "get_suffix")

    def _meta(self, raw: ObstoreMeta, key: str | None = None) -> ObjectMeta:
        modified = raw["last_modified"]
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        return ObjectMeta(
            key=raw["path"] if key is None else key,
            size=int(raw["size"]),
            last_modified=modified.astimezone(UTC),
            etag=raw.get("e_tag"),
        )

    async def head(self, key: str) -> ObjectMeta:
        validate_key(key)
        store = self._client()
        raw = await self._io(lambda: obstore.head_async(store, key), key, "head")
        return self._meta(raw, key)

    # -- writes -------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, mode: PutMode = "overwrite") -> None:
        validate_key(key)
        if mode not in ("overwrite", "create", "fresh", "replace"):
            raise InvalidInputError(
                f"put mode must be 'overwrite', 'create', 'fresh' or 'replace', not {mode!r}")
        local = self._local_root(key)
        if local is not None:
            # the staged file and atomic rename (or hard link, for a create) that obstore's
            # LocalStore does, without the hop to its I/O runtime and back
            if mode == "fresh":
                write = functools.partial(put_fresh_local_file, local, key, data)
            else:
                write = functools.partial(put_local_file, local, key, data,
                                          create=mode == "create", parents=mode != "replace")
            # small writes inline, except overwrites: their rename can take a millisecond
            # (overlay filesystems), and the tip hint's is written in the background
            if len(data) <= _INLINE_LOCAL_BYTES and mode in ("create", "fresh"):
                write()
            else:
                await in_thread(write)
            return
        # fresh and replace: one PUT is atomic on object stores already
        remote: Literal["create", "overwrite"] = "create" if mode == "create" else "overwrite"
        store = self._client()
        if len(data) <= _INLINE_PUT_BYTES and self._spec.backend == "memory":
            async def inline_call() -> None:
                obstore.put(store, key, data, mode=remote)

            await self._io(inline_call, key, "put")
            return

        async def call() -> None:
            await obstore.put_async(store, key, data, mode=remote)

        await self._io(call, key, "put")

    async def check_conditional_writes(self) -> None:
        if self._spec.backend == "local":
            # hard links: create-if-absent by construction; only a file in the way fails
            check_root(self._spec.option("path"))
            return
        if self._spec.backend not in _NETWORK_BACKENDS:
            return  # memory: create-if-absent by construction
        key = f"{_PROBE_PREFIX}/{uuid.uuid4().hex}"
        what = f"{self.describe()} cannot hold a repository"
        try:
            # an ObjectExistsError here is our own write whose response was lost (unique key)
            with contextlib.suppress(ObjectExistsError):
                await self.put(key, b"first", mode="create")
            try:
                await self.put(key, b"second", mode="create")
            except ObjectExistsError:
                return  # the backend refused to overwrite: conditional writes work
        except (StorageError, NotFoundError) as exc:  # not found: no such bucket/container
            raise StorageError(
                f"{what}: a create-if-absent write failed: {str(exc).splitlines()[0]}",
                key=key, cause=exc,
            ) from exc
        finally:
            with contextlib.suppress(StorageError, NotFoundError):
                await self.delete(key)
        raise StorageError(
            f"{what}: it does not honor create-if-absent writes (a second put(mode='create') "
            "of one key succeeded), so concurrent commits could overwrite each other",
            key=key,
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        store = self._client()

        async def call() -> None:
            # local, GCS and Azure refuse to delete a missing key
            with contextlib.suppress(FileNotFoundError):
                await obstore.delete_async(store, key)

        await self._io(call, key, "delete")

    async def delete_many(self, keys: Iterable[str]) -> int:
        store = self._client()
        limit = asyncio.Semaphore(_DELETE_CONCURRENCY)
        total = 0

        async def one(key: str) -> None:
            async with limit:
                await self.delete(key)

        for batch in _batches(keys, _DELETE_BATCH):
            for key in batch:
                validate_key(key)
            total += len(batch)

            async def call(batch: builtins.list[str] = batch) -> bool:
                try:
                    await obstore.delete_async(store, batch)
                except FileNotFoundError:
                    return False
                return True

            if not await self._io(call, None, "delete_many"):
                # the backend stopped at a missing key: finish the batch one key at a time
                await asyncio.gather(*(one(k) for k in batch))
        return total

    # -- listing ------------------------------------------------------------------------------

    def list(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        validate_prefix(prefix)
        return self._list(prefix)

    async def _list(self, prefix: str) -> AsyncIterator[ObjectMeta]:
        store = self._client()
        # obstore prefixes match whole path segments: list the enclosing "directory", filter
        directory = prefix.rpartition("/")[0] or None
        if (directory is not None and self._spec.backend == "local"
                and not os.path.isdir(os.path.join(self._spec.option("path"), directory))):
            # nothing was ever written under it (a commit's LIST of ``gc/`` in a repository
            # never collected): no trip through obstore's runtime to learn that
            return
        resumable = self._spec.backend in _SORTED_LISTINGS
        offset: str | None = None
        yielded = False
        tries = Attempts(self.retry_policy)
        while True:
            try:
                stream = obstore.list(store, directory, offset=offset, chunk_size=_LIST_CHUNK)
                async for batch in stream:
                    for raw in batch:
                        if raw["path"].startswith(prefix):
                            yield self._meta(raw)
                            yielded = True
                        offset = raw["path"]
                return
            except Exception as exc:  # the one translation boundary
                # a listing that already yielded resumes only where it can skip what it gave
                if await tries.retry((resumable or not yielded) and is_transient(exc)):
                    if not resumable:
                        offset = None
                    continue
                raise translate_error(
                    exc, backend=self._spec.backend, key=prefix or None, op="list",
                    attempts=tries.failed,
                ) from exc

    # -- leftovers of unfinished writes -------------------------------------------------------

    def list_staged(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        if self._spec.backend != "local":
            # memory writes are atomic; a network put that dies leaves no object (a large
            # one may leave an incomplete multipart upload: docs/storage.md)
            return super().list_staged(prefix)
        validate_prefix(prefix)
        return self._list_staged(prefix)

    async def _list_staged(self, prefix: str) -> AsyncIterator[ObjectMeta]:
        for meta in await in_thread(list_staged, self._spec.option("path"), prefix):
            yield meta

    async def delete_staged(self, keys: Iterable[str]) -> int:
        if self._spec.backend != "local":
            return await super().delete_staged(keys)
        wanted = [validate_key(k) for k in keys]
        return await in_thread(remove_staged, self._spec.option("path"), wanted)

    async def is_empty(self) -> bool:
        if self._spec.backend == "local":
            return is_empty_dir(self._spec.option("path"))
        return await super().is_empty()
