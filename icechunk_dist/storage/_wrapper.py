"""A storage over another storage: :class:`WrapperStorage` forwards every operation to it.

The base of storages that watch, delay or change some requests and pass the rest through
(:class:`~icechunk_dist.storage.FaultyStorage`, the test suite's counting and hooking
storages), as zarr's ``WrapperStore`` is for stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.storage._base import ObjectMeta, PutMode, Storage

__all__ = ["WrapperStorage"]


class WrapperStorage(Storage):
    """A :class:`Storage` that forwards every operation to ``inner``.

    Subclasses override the operations they change. ``exists`` and the ``*_sync`` twins are
    not forwarded: they run on this storage's own ``head``, ``get``, ``put``..., so an
    override sees every request.

    Identity follows ``inner``: :meth:`describe` is the inner one's, two wrappers are equal
    when they are of the same class over equal storages, and a wrapper pickles as its class
    and ``inner`` (``type(self)(inner)``). A subclass whose ``__init__`` takes more, or
    whose state makes two wrappers differ, overrides ``__reduce__``, ``__eq__`` and
    ``__hash__``.

    Parameters
    ----------
    inner
        The storage every request goes to.

    Attributes
    ----------
    inner
        The wrapped storage.

    Raises
    ------
    InvalidInputError
        If ``inner`` is not a :class:`Storage`.
    """

    def __init__(self, inner: Storage) -> None:
        if not isinstance(inner, Storage):
            raise InvalidInputError(f"a wrapper storage wraps a Storage, not {inner!r}")
        self.inner = inner

    # -- identity -----------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self.inner.backend

    @property
    def supports_pickle(self) -> bool:
        return self.inner.supports_pickle

    def describe(self) -> str:
        return self.inner.describe()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WrapperStorage):
            return NotImplemented
        return type(self) is type(other) and self.inner == other.inner

    def __hash__(self) -> int:
        return hash((type(self), self.inner))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.inner,))

    # -- the Storage contract, forwarded ------------------------------------------------------

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await self.inner.get_range(key, start, end)

    async def get_suffix(self, key: str, length: int) -> bytes:
        return await self.inner.get_suffix(key, length)

    async def head(self, key: str) -> ObjectMeta:
        return await self.inner.head(key)

    async def put(self, key: str, data: bytes, *, mode: PutMode = "overwrite") -> None:
        await self.inner.put(key, data, mode=mode)

    async def check_conditional_writes(self) -> None:
        await self.inner.check_conditional_writes()

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def delete_many(self, keys: Iterable[str]) -> int:
        return await self.inner.delete_many(keys)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        return self.inner.list(prefix)

    def list_staged(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        return self.inner.list_staged(prefix)

    async def delete_staged(self, keys: Iterable[str]) -> int:
        return await self.inner.delete_staged(keys)

    async def is_empty(self) -> bool:
        return await self.inner.is_empty()
