"""Reading virtual chunks: containers, authorization, checksums, coalesced ranged reads.

A :class:`VirtualSources` belongs to a session. It reads a virtual chunk only if a
container of the repository's config covers its URL *and* that container was authorized
when the repository was opened (``authorize_virtual_chunk_access``); anything else is
refused with :class:`~icechunk_dist.VirtualChunkAccessError` before any request is made.

Reads go through obstore. Requests for byte ranges of one object (with one recorded
checksum) that arrive together (zarr fetches the chunks of a selection concurrently) are
merged into one ranged GET when they are adjacent or close (:func:`plan_spans`), and at
most ``max_concurrent`` GETs run at once per event loop. The recorded etag becomes an
``If-Match`` precondition, the recorded last-modified time an ``If-Unmodified-Since``: a
source changed since its refs were recorded fails the read in the same request, with
:class:`~icechunk_dist.SourceChangedError` naming it, never returning other bytes.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import obstore
import obstore.exceptions as obe

from icechunk_dist._containers import VirtualChunkContainer
from icechunk_dist.credentials import AnyCredential
from icechunk_dist.errors import SourceChangedError, StorageError, VirtualChunkAccessError
from icechunk_dist.storage._obstore import check_runtime
from icechunk_dist.storage._retry import (
    DEFAULT_RETRY,
    Attempts,
    RetryPolicy,
    is_transient,
)
from icechunk_dist.storage._vclients import client_for

if TYPE_CHECKING:
    from obstore import GetOptions
    from obstore.store import ObjectStore

__all__ = [
    "COALESCE_GAP",
    "COALESCE_WINDOW",
    "MAX_SPAN",
    "SourceStat",
    "VirtualSources",
    "plan_spans",
]

#: ranges of one object at most this far apart are read by one request (the bytes between
#: are read and dropped), as object_store's own ``get_ranges``
COALESCE_GAP = 1 << 20
#: the longest merged request
MAX_SPAN = 64 << 20
#: how long a read from a network container waits for others to join its request (s)
COALESCE_WINDOW = 0.002

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# (url, etag, modified): what one request may serve
_Loc = tuple[str, str | None, int]


def plan_spans(ranges: Sequence[tuple[int, int]], gap: int = COALESCE_GAP,
               max_span: int = MAX_SPAN) -> list[tuple[int, int, list[int]]]:
    """Group byte ranges ``[start, end)`` into requests ``(start, end, members)``: ranges
    that overlap or lie within ``gap`` bytes of each other share one request of at most
    ``max_span`` bytes (a single longer range gets its own)."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i])
    spans: list[tuple[int, int, list[int]]] = []
    for i in order:
        s, e = ranges[i]
        if spans:
            s0, e0, members = spans[-1]
            if s <= e0 + gap and max(e, e0) - s0 <= max_span:
                spans[-1] = (s0, max(e0, e), members)
                members.append(i)
                continue
        spans.append((s, e, [i]))
    return spans


@dataclass(frozen=True)
class SourceStat:
    """What a virtual chunk source looks like now: the checksums a ref records."""

    url: str
    size: int
    etag: str | None
    last_modified: datetime | None


class _Pending:
    """Reads of one location waiting to be sent together."""

    __slots__ = ("key", "ranges", "waiters")

    def __init__(self, key: str) -> None:
        self.key = key  # the zarr key of the first read, for messages
        self.ranges: list[tuple[int, int]] = []
        self.waiters: list[asyncio.Future[bytes]] = []


class _LoopState:
    """Per event loop: the request limit and the reads not yet sent."""

    def __init__(self, limit: int) -> None:
        self.limit = asyncio.Semaphore(limit)
        self.pending: dict[_Loc, _Pending] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # flushes in flight (kept referenced)


class VirtualSources:
    """The virtual chunk containers a session may read, with their credentials.

    Parameters
    ----------
    containers
        The repository config's containers.
    authorized
        url prefix -> credentials (or None) of the containers the user authorized.
    max_concurrent
        Most GETs in flight at once per event loop.

    Pickles as its containers and credentials (sessions and forks carry it to workers).
    """

    #: retry policy of virtual reads (class-wide; tests may shorten it)
    retry_policy: RetryPolicy = DEFAULT_RETRY

    def __init__(self, containers: Sequence[VirtualChunkContainer] = (),
                 authorized: Mapping[str, AnyCredential | None] | None = None,
                 max_concurrent: int = 64) -> None:
        self._containers = tuple(containers)
        self._authorized = dict(authorized or {})
        self._max = max(1, int(max_concurrent))
        self._by_name = {c.name: c for c in self._containers if c.name}
        # longest prefix first: the most specific container serves a URL
        self._ordered = sorted(self._containers, key=lambda c: len(c.url_prefix), reverse=True)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()  # sessions are read from several threads' loops

    def __reduce__(self) -> tuple[Any, ...]:
        return (VirtualSources, (self._containers, self._authorized, self._max))

    def __repr__(self) -> str:
        return (f"<VirtualSources containers={[c.url_prefix for c in self._containers]} "
                f"authorized={sorted(self._authorized)}>")

    @property
    def containers(self) -> tuple[VirtualChunkContainer, ...]:
        return self._containers

    @property
    def authorized_prefixes(self) -> set[str]:
        """The url prefixes authorized (Icechunk's ``authorized_virtual_container_prefixes``)."""
        return set(self._authorized)

    def with_containers(self, containers: Sequence[VirtualChunkContainer]) -> VirtualSources:
        """The same authorization over another set of containers."""
        return VirtualSources(containers, self._authorized, self._max)

    # ------------------------------------------------------------------ resolution
    def container_for(self, url: str) -> VirtualChunkContainer | None:
        """The container serving ``url`` (longest matching prefix, or the named container
        of a ``vcc://name/...`` URL), or None."""
        if url.startswith("vcc://"):
            name = url[len("vcc://"):].partition("/")[0]
            return self._by_name.get(name)
        for c in self._ordered:
            if url.startswith(c.url_prefix):
                return c
        return None

    def resolve(self, url: str) -> tuple[ObjectStore, str, str]:
        """(client, key, absolute url) to read ``url``.

        Raises
        ------
        VirtualChunkAccessError
            If no container covers ``url``, or its container is not authorized.
        StorageError
            If the client cannot be built.
        """
        c = self.container_for(url)
        check_runtime(f"virtual chunk {url!r}")
        if c is None:
            known = ", ".join(repr(x.url_prefix) for x in self._containers) or "none"
            raise VirtualChunkAccessError(
                f"cannot read virtual chunk {url!r}: no virtual chunk container covers it "
                f"(containers: {known}); add one with "
                "RepositoryConfig.set_virtual_chunk_container", key=url)
        if c.url_prefix not in self._authorized:
            raise VirtualChunkAccessError(
                f"cannot read virtual chunk {url!r}: its container {c.url_prefix!r} is not "
                "authorized; open the repository with authorize_virtual_chunk_access="
                f"{{{c.url_prefix!r}: <credentials>}}", key=url)
        absolute = c.url_prefix + url[len("vcc://") + len(c.name or "") + 1:] \
            if url.startswith("vcc://") else url
        client, key = client_for(c, self._authorized[c.url_prefix], absolute)
        return client, key, absolute

    # ------------------------------------------------------------------ reads
    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            st = self._loops.get(loop)
            if st is None:
                st = self._loops[loop] = _LoopState(self._max)
        return st

    async def read(self, url: str, etag: str | None, modified: int, start: int, end: int,
                   *, key: str = "") -> bytes:
        """Bytes ``[start, end)`` of the object at ``url`` (fewer if it is shorter).

        ``etag`` / ``modified`` (microseconds, 0 for none) are the checksums recorded with
        the ref. Reads of one location issued together are merged.

        Raises
        ------
        VirtualChunkAccessError
            If the URL is not in an authorized container (nothing is fetched).
        SourceChangedError
            If the object changed since the checksums were recorded.
        StorageError
            If the object is missing or the backend fails.
        """
        self.resolve(url)  # refuse before anything is queued or fetched
        if end <= start:
            return b""
        st = self._state()
        loc = (url, etag, modified)
        batch = st.pending.get(loc)
        if batch is None:
            batch = st.pending[loc] = _Pending(key)
            task = asyncio.get_running_loop().create_task(self._flush(st, loc))
            st.tasks.add(task)
            task.add_done_callback(st.tasks.discard)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        batch.ranges.append((start, end))
        batch.waiters.append(fut)
        return await fut

    async def _flush(self, st: _LoopState, loc: _Loc) -> None:
        # let the other reads of this round join: zarr reads a selection's chunks a few at
        # a time, each starting when an earlier one is decoded. Over the network a request
        # costs milliseconds, so waiting a little for them pays; on local disk it would not
        c = self.container_for(loc[0])
        if c is None or c.scheme == "file":
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(COALESCE_WINDOW)
        batch = st.pending.pop(loc)
        spans = plan_spans(batch.ranges)
        await asyncio.gather(*(self._serve(st, loc, batch, s) for s in spans))

    async def _serve(self, st: _LoopState, loc: _Loc, batch: _Pending,
                     span: tuple[int, int, list[int]]) -> None:
        s0, e0, members = span
        try:
            data = await self._get(st, loc, s0, e0)
        except _RangeError:
            if len(members) == 1:
                data = b""  # starts past the end: the caller reports a short chunk
            else:  # some member may still be inside the object: read them one by one
                await asyncio.gather(*(self._serve(st, loc, batch, (*batch.ranges[i], [i]))
                                       for i in members))
                return
        except asyncio.CancelledError:
            for i in members:
                batch.waiters[i].cancel()
            raise
        except Exception as exc:  # handed to every read of the request
            for i in members:
                if not batch.waiters[i].done():
                    batch.waiters[i].set_exception(exc)
            return
        view = memoryview(data)
        for i in members:
            s, e = batch.ranges[i]
            if not batch.waiters[i].done():
                batch.waiters[i].set_result(bytes(view[s - s0 : e - s0]))

    async def _get(self, st: _LoopState, loc: _Loc, start: int, end: int) -> Any:
        url, etag, modified = loc
        client, key, _ = self.resolve(url)
        opts: GetOptions = {"range": (start, end)}
        if etag is not None:
            opts["if_match"] = etag
        if modified:
            # microseconds are what was recorded; the source's own clock may be finer
            opts["if_unmodified_since"] = _EPOCH + timedelta(microseconds=modified + 1)
        tries = Attempts(self.retry_policy)
        while True:
            try:
                async with st.limit:
                    result = await obstore.get_async(client, key, options=opts)
                    return await result.bytes_async()
            except obe.PreconditionError:
                what = (f"its etag is no longer {etag!r}" if etag is not None else
                        "it was modified after "
                        f"{(_EPOCH + timedelta(microseconds=modified)).isoformat()}")
                raise SourceChangedError(
                    f"cannot read virtual chunk {url!r}: the source changed since its "
                    f"virtual refs were recorded ({what}); re-index it", key=url) from None
            except Exception as exc:  # the one translation boundary of virtual reads
                if _past_the_end(exc):
                    raise _RangeError from exc
                if await tries.retry(is_transient(exc)):
                    continue
                if isinstance(exc, FileNotFoundError | obe.NotFoundError):
                    raise StorageError(f"cannot read virtual chunk {url!r}: the object does "
                                       "not exist (moved or deleted since it was indexed?)",
                                       key=url, cause=exc) from exc
                after = f" after {tries.failed} attempts" if tries.failed > 1 else ""
                raise StorageError(f"cannot read virtual chunk {url!r}{after}: "
                                   f"{_first_line(exc)}", key=url, cause=exc) from exc

    async def stat(self, url: str) -> SourceStat:
        """Size, etag and last-modified time of the object at ``url`` now (a HEAD), to be
        recorded with refs into it.

        Raises
        ------
        VirtualChunkAccessError
            If the URL is not in an authorized container.
        StorageError
            If the object is missing or the backend fails.
        """
        client, key, _ = self.resolve(url)
        try:
            meta = await obstore.head_async(client, key)
        except Exception as exc:  # the one translation boundary of virtual reads
            raise StorageError(f"cannot stat virtual chunk source {url!r}: "
                               f"{_first_line(exc)}", key=url, cause=exc) from exc
        return SourceStat(url=url, size=int(meta["size"]), etag=meta.get("e_tag"),
                          last_modified=meta.get("last_modified"))


def _past_the_end(exc: BaseException) -> bool:
    """Whether obstore refused a range starting past the end of the object (local disk:
    InvalidRange; HTTP: 416)."""
    if not isinstance(exc, obe.GenericError):
        return False
    low = str(exc).lower()
    return ("requested range" in low or "invalidrange" in low or "status code: 416" in low
            or "range not satisfiable" in low)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _RangeError(Exception):
    """A range starting past the end of the object (obstore refuses it)."""
