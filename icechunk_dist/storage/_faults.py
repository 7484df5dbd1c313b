"""A storage wrapper that injects faults: the testing tool behind the reliability claims.

:class:`FaultyStorage` wraps any :class:`Storage` and, for the requests that match its
:class:`Fault` rules, adds latency, fails the request before it reaches the backend (a
transient error), performs it and then loses the response (the write *landed*, the caller
does not know), hides entries of a listing, or SIGKILLs its own process just before or just
after a request lands (crash testing without hooks in production code).

Faults are injected *below* a retry loop that behaves like the one of the real backends
(the same :class:`~._retry.RetryPolicy` and counting, with shorter waits): a lost response to
a ``put(mode="create")`` is retried, and the retry then meets the object the first attempt
wrote, exactly as on S3 when a response is lost on the wire.
When every attempt fails the caller gets :class:`~icechunk_dist.StorageError`.

Examples
--------
>>> import icechunk_dist as icd
>>> from icechunk_dist.storage import Fault, FaultyStorage
>>> storage = FaultyStorage(
...     icd.in_memory_storage(),
...     [Fault.lost_response(op="put", prefix="snapshots/", times=1)],
... )
>>> repo = icd.Repository.create(storage)  # the lost response is recognised as our own write
>>> storage.fired["lost_response"]
1
"""

from __future__ import annotations

import asyncio
import builtins
import os
import random
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from icechunk_dist.errors import InvalidInputError, StorageError
from icechunk_dist.storage._base import ObjectMeta, PutMode, Storage
from icechunk_dist.storage._retry import SIMULATED_RETRY, Attempts, RetryPolicy
from icechunk_dist.storage._wrapper import WrapperStorage

__all__ = ["Fault", "FaultKind", "FaultyStorage"]

T = TypeVar("T")

FaultKind = Literal["latency", "transient", "lost_response", "partial_list", "kill"]
_OPS = frozenset({"get", "get_range", "get_suffix", "head", "put", "delete", "delete_many",
                  "list"})
_KINDS = frozenset({"latency", "transient", "lost_response", "partial_list", "kill"})


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault rule: which requests it matches, what it does, how often.

    Build rules with the class methods (:meth:`transient`, :meth:`lost_response`,
    :meth:`latency`, :meth:`partial_list`, :meth:`kill`).

    Attributes
    ----------
    kind
        What happens to a matching request (see the class methods).
    ops
        Operation names it applies to (``"get"``, ``"get_range"``, ``"get_suffix"``,
        ``"head"``, ``"put"``, ``"delete"``, ``"delete_many"``, ``"list"``); empty means all.
    prefix
        Only keys (for ``list``: listing prefixes, or listed keys for ``partial_list``) that
        start with this string.
    mode
        For ``put``: only this write mode (``"create"`` or ``"overwrite"``); None means both.
    probability
        Chance that a matching request is hit, drawn from the wrapper's seeded generator.
    times
        How many times the rule fires at most; None means without limit.
    skip
        How many matching requests to let through untouched before the rule may fire.
    seconds
        Delay added by a ``latency`` rule.
    keep
        Fraction of matching entries a ``partial_list`` rule keeps in a listing.
    when
        For ``kill``: ``"before"`` the request reaches the backend or ``"after"`` it landed.
    """

    kind: FaultKind
    ops: frozenset[str] = frozenset()
    prefix: str = ""
    mode: PutMode | None = None
    probability: float = 1.0
    times: int | None = None
    skip: int = 0
    seconds: float = 0.0
    keep: float = 0.5
    when: Literal["before", "after"] = "after"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InvalidInputError(f"unknown fault kind {self.kind!r}; one of {sorted(_KINDS)}")
        bad = set(self.ops) - _OPS
        if bad:
            raise InvalidInputError(f"unknown storage operations {sorted(bad)}; "
                                    f"known: {sorted(_OPS)}")
        if not 0.0 <= self.probability <= 1.0 or not 0.0 <= self.keep <= 1.0:
            raise InvalidInputError("probability and keep must be between 0 and 1")
        if (self.times is not None and self.times < 0) or self.skip < 0 or self.seconds < 0:
            raise InvalidInputError("times, skip and seconds must not be negative")
        if self.when not in ("before", "after"):
            raise InvalidInputError(f"when must be 'before' or 'after', not {self.when!r}")

    # -- constructors -------------------------------------------------------------------------

    @staticmethod
    def _ops(op: str | Iterable[str] | None) -> frozenset[str]:
        if op is None:
            return frozenset()
        return frozenset({op} if isinstance(op, str) else op)

    @classmethod
    def transient(cls, *, op: str | Iterable[str] | None = None, prefix: str = "",
                  mode: PutMode | None = None, probability: float = 1.0,
                  times: int | None = None, skip: int = 0) -> Fault:
        """The request fails before it reaches the backend (a 503, a reset connection)."""
        return cls("transient", cls._ops(op), prefix, mode, probability, times, skip)

    @classmethod
    def lost_response(cls, *, op: str | Iterable[str] | None = "put", prefix: str = "",
                      mode: PutMode | None = None, probability: float = 1.0,
                      times: int | None = None, skip: int = 0) -> Fault:
        """The request lands on the backend, then its response is lost (the caller sees a
        transient error and retries)."""
        return cls("lost_response", cls._ops(op), prefix, mode, probability, times, skip)

    @classmethod
    def latency(cls, seconds: float, *, op: str | Iterable[str] | None = None,
                prefix: str = "", probability: float = 1.0, times: int | None = None,
                skip: int = 0) -> Fault:
        """The request is delayed by ``seconds`` before it is sent."""
        return cls("latency", cls._ops(op), prefix, None, probability, times, skip,
                   seconds=seconds)

    @classmethod
    def partial_list(cls, *, prefix: str = "", keep: float = 0.5, probability: float = 1.0,
                     times: int | None = None, skip: int = 0) -> Fault:
        """A listing silently omits entries whose key starts with ``prefix``: each one is
        kept with probability ``keep`` (a listing that raced with writes or lost a page)."""
        return cls("partial_list", frozenset({"list"}), prefix, None, probability, times,
                   skip, keep=keep)

    @classmethod
    def kill(cls, *, op: str | Iterable[str] | None = "put", prefix: str = "",
             mode: PutMode | None = None, when: Literal["before", "after"] = "after",
             skip: int = 0) -> Fault:
        """SIGKILL this process ``"before"`` the matching request is sent or ``"after"`` it
        landed (the first match after ``skip``): a crash at an exact step of a protocol."""
        return cls("kill", cls._ops(op), prefix, mode, 1.0, 1, skip, when=when)


class _Injected(Exception):
    """An injected transient failure, seen by the wrapper's retry loop only."""


class FaultyStorage(WrapperStorage):
    """A :class:`WrapperStorage` that injects :class:`Fault` rules into the requests to
    ``inner``. Listings of staging objects, :meth:`is_empty` and the conditional-write probe
    pass through without faults (virtual chunks are not read through a storage).

    Parameters
    ----------
    inner
        The real storage every request that gets through is sent to.
    faults
        The rules; every matching rule applies (latency first, then kill-before, transient,
        the request itself, lost response, kill-after).
    seed
        Seed of the generator behind ``probability`` and ``keep``: runs are reproducible.
    retry
        The retry loop around injected failures, like the one real backends have (default
        :data:`~icechunk_dist.storage._retry.SIMULATED_RETRY`: 4 tries, millisecond waits).
        Its ``attempts`` bounds how many injected failures one call survives. Failures of
        ``inner`` itself are retried by ``inner`` alone, never here.

    Attributes
    ----------
    requests
        ``Counter`` of requests that reached ``inner``, by operation name.
    fired
        ``Counter`` of faults that fired, by kind.
    landed
        Keys written by ``put`` requests that reached ``inner``, in order.
    log
        ``(operation, key or listing prefix)`` of every request that reached ``inner``.

    Raises
    ------
    InvalidInputError
        If a rule is not a :class:`Fault`.
    """

    def __init__(self, inner: Storage, faults: Sequence[Fault] = (), *, seed: int = 0,
                 retry: RetryPolicy | None = None) -> None:
        for f in faults:
            if not isinstance(f, Fault):
                raise InvalidInputError(f"faults must be Fault rules, got {f!r}")
        super().__init__(inner)
        self.faults: tuple[Fault, ...] = tuple(faults)
        self.seed = seed
        self.retry = retry if retry is not None else SIMULATED_RETRY
        self.requests: Counter[str] = Counter()
        self.fired: Counter[str] = Counter()
        self.landed: builtins.list[str] = []
        self.log: builtins.list[tuple[str, str]] = []
        self._rng = random.Random(seed)
        self._seen = [0] * len(self.faults)
        self._hits = [0] * len(self.faults)
        self._lock = threading.Lock()

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Replace the rules (counters of the old rules are dropped)."""
        with self._lock:
            self.faults = tuple(faults)
            self._seen = [0] * len(self.faults)
            self._hits = [0] * len(self.faults)

    def reset_counters(self) -> None:
        """Zero :attr:`requests`, :attr:`fired`, :attr:`landed` and :attr:`log`."""
        with self._lock:
            self.requests.clear()
            self.fired.clear()
            self.landed.clear()
            self.log.clear()

    # -- identity -----------------------------------------------------------------------------

    def describe(self) -> str:
        return f"{self.inner.describe()} (with {len(self.faults)} fault rules)"

    def __repr__(self) -> str:
        return f"<FaultyStorage {self.describe()}>"

    def __eq__(self, other: object) -> bool:
        # like every storage, by what it connects to: a copy pickled to a worker is equal
        if not isinstance(other, FaultyStorage):
            return NotImplemented
        return (self.inner, self.faults, self.seed) == (other.inner, other.faults, other.seed)

    def __hash__(self) -> int:
        return hash((self.inner, self.faults, self.seed))

    def __reduce__(self) -> tuple[Any, ...]:
        # another process gets the same rules with fresh counters
        return (_restore, (self.inner, self.faults, self.seed, self.retry))

    # -- the machinery ------------------------------------------------------------------------

    def _matching(self, op: str, key: str, mode: PutMode | None, kinds: frozenset[str]
                  ) -> builtins.list[Fault]:
        out = []
        with self._lock:
            for i, f in enumerate(self.faults):
                if f.kind not in kinds or (f.ops and op not in f.ops):
                    continue
                if not key.startswith(f.prefix) or (f.mode is not None and f.mode != mode):
                    continue
                self._seen[i] += 1
                if self._seen[i] <= f.skip or (f.times is not None and self._hits[i] >= f.times):
                    continue
                if f.probability < 1.0 and self._rng.random() >= f.probability:
                    continue
                self._hits[i] += 1
                self.fired[f.kind] += 1
                out.append(f)
        return out

    async def _attempt(self, op: str, key: str, mode: PutMode | None,
                       call: Callable[[], Awaitable[T]]) -> T:
        before = frozenset({"latency", "transient", "kill"})
        kill_after = False
        for f in self._matching(op, key, mode, before):
            if f.kind == "latency":
                await asyncio.sleep(f.seconds)
            elif f.kind == "kill" and f.when == "before":
                _die()
            elif f.kind == "kill":
                kill_after = True
            else:
                raise _Injected(f"injected transient failure of {op} {key!r}")
        with self._lock:
            self.requests[op] += 1
            self.log.append((op, key))
        result = await call()
        if op == "put":
            with self._lock:
                self.landed.append(key)
        if kill_after:
            _die()
        if self._matching(op, key, mode, frozenset({"lost_response"})):
            raise _Injected(f"injected lost response of {op} {key!r} (it landed)")
        return result

    async def _run(self, op: str, key: str, call: Callable[[], Awaitable[T]],
                   mode: PutMode | None = None) -> T:
        tries = Attempts(self.retry)
        while True:
            try:
                return await self._attempt(op, key, mode, call)
            except _Injected as exc:
                if await tries.retry(transient=True):
                    continue
                raise StorageError(
                    f"{op} of {key!r} in {self.inner.describe()} failed after {tries.failed} "
                    f"attempts: {exc}", key=key or None, cause=exc,
                ) from None

    # -- the Storage contract -----------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        return await self._run("get", key, lambda: self.inner.get(key))

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await self._run("get_range", key, lambda: self.inner.get_range(key, start, end))

    async def get_suffix(self, key: str, length: int) -> bytes:
        return await self._run("get_suffix", key, lambda: self.inner.get_suffix(key, length))

    async def head(self, key: str) -> ObjectMeta:
        return await self._run("head", key, lambda: self.inner.head(key))

    async def put(self, key: str, data: bytes, *, mode: PutMode = "overwrite") -> None:
        await self._run("put", key, lambda: self.inner.put(key, data, mode=mode), mode)

    async def delete(self, key: str) -> None:
        await self._run("delete", key, lambda: self.inner.delete(key))

    async def delete_many(self, keys: Iterable[str]) -> int:
        batch = builtins.list(keys)
        first = batch[0] if batch else ""
        return await self._run("delete_many", first, lambda: self.inner.delete_many(batch))

    def list(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        return self._list(prefix)

    async def _list(self, prefix: str) -> AsyncIterator[ObjectMeta]:
        async def collect() -> builtins.list[ObjectMeta]:
            return [m async for m in self.inner.list(prefix)]

        # a listing is one request here: collected whole so a retry never yields twice
        items = await self._run("list", prefix, collect)
        for meta in items:
            if any(self._rng.random() >= f.keep
                   for f in self._matching("list", meta.key, None, frozenset({"partial_list"}))):
                continue
            yield meta


def _restore(inner: Storage, faults: tuple[Fault, ...], seed: int, retry: RetryPolicy
             ) -> FaultyStorage:
    return FaultyStorage(inner, faults, seed=seed, retry=retry)


def _die() -> None:  # pragma: no cover - the process ends here
    os.kill(os.getpid(), signal.SIGKILL)

