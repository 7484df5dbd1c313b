"""The per-process registry of shared forks (docs/design/003-shared-forks.md)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Protocol, TypeVar

__all__ = ["_REGISTRY", "_REGISTRY_LOCK", "SharedFork", "_hold", "_register", "_release"]


class SharedFork(Protocol):
    """What the registry needs from a fork (``SharedFork``)."""

    @property
    def fork_id(self) -> str: ...

    @property
    def has_uncommitted_changes(self) -> bool: ...


F = TypeVar("F", bound=SharedFork)


class _ForkRegistry:
    """fork id -> the shared fork of this process (docs/design/003-shared-forks.md).

    A fork that has recorded writes is held strongly until it is released (merged, or
    pulled by ``gather_forks``): dropping it would lose those writes silently. A fork without
    writes is held weakly: while a task uses it, it stays; once nobody does, a copy that
    arrives later is an equivalent fresh object. There is no size-based eviction.
    Callers hold ``_REGISTRY_LOCK``.
    """

    def __init__(self) -> None:
        self._weak: weakref.WeakValueDictionary[str, SharedFork] = (
            weakref.WeakValueDictionary())
        self._holding: dict[str, SharedFork] = {}

    def get(self, fork_id: str, default: SharedFork | None = None) -> SharedFork | None:
        f = self._holding.get(fork_id)
        return f if f is not None else self._weak.get(fork_id, default)

    def __setitem__(self, fork_id: str, f: SharedFork) -> None:
        self._weak[fork_id] = f
        if f.has_uncommitted_changes:
            self._holding[fork_id] = f

    def hold(self, f: SharedFork) -> None:
        """Keep ``f`` until released: it has recorded writes."""
        if self._weak.get(f.fork_id) is f:
            self._holding[f.fork_id] = f

    def pop(self, fork_id: str, default: SharedFork | None = None) -> SharedFork | None:
        held = self._holding.pop(fork_id, None)
        weak = self._weak.pop(fork_id, None)
        if held is not None:
            return held
        return weak if weak is not None else default

    def items(self) -> list[tuple[str, SharedFork]]:
        return list(self._weak.items())

    def update(self, pairs: Iterable[tuple[str, SharedFork]]) -> None:
        for k, v in pairs:
            self[k] = v

    def clear(self) -> None:
        self._weak.clear()
        self._holding.clear()

    def __contains__(self, fork_id: object) -> bool:
        return fork_id in self._holding or fork_id in self._weak

    def __len__(self) -> int:
        return len(self._weak)


_REGISTRY = _ForkRegistry()
_REGISTRY_LOCK = threading.Lock()


def _register(f: F) -> F:
    with _REGISTRY_LOCK:
        existing = _REGISTRY.get(f.fork_id)
        if existing is not None:
            return existing  # type: ignore[return-value]  # same fork id: same class
        _REGISTRY[f.fork_id] = f
    return f


def _hold(f: SharedFork) -> None:
    with _REGISTRY_LOCK:
        _REGISTRY.hold(f)


def _release(f: SharedFork) -> None:
    with _REGISTRY_LOCK:
        if _REGISTRY.get(f.fork_id) is f:
            _REGISTRY.pop(f.fork_id)
