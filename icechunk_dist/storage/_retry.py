"""Backend errors translated into ours, and transient ones retried: the one boundary.

Missing keys become :class:`ObjectNotFoundError`, lost creates :class:`ObjectExistsError`, and
everything else :class:`~icechunk_dist.StorageError` once transient failures (network trouble,
5xx, throttling) were retried with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import obstore.exceptions as obe

from icechunk_dist.errors import InvalidInputError, StorageError
from icechunk_dist.storage._base import ObjectExistsError, ObjectNotFoundError

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "is_transient", "translate_error", "with_retries"]

T = TypeVar("T")

_STATUS = re.compile(r"status code: (\d{3})")
_TRANSIENT_TEXT = (
    "timed out",
    "timeout",
    "connection reset",
    "connection closed",
    "connection refused",
    "broken pipe",
    "error sending request",
    "slowdown",
    "slow down",
    "internalerror",
    "service unavailable",
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (raised by obstore) is worth retrying: network trouble, 5xx, throttling."""
    if isinstance(exc, FileNotFoundError | obe.AlreadyExistsError | obe.PreconditionError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if not isinstance(exc, obe.GenericError):
        return False
    text = str(exc)
    for match in _STATUS.finditer(text):
        status = int(match.group(1))
        # the first status decides; a definite 4xx answer will not change on retry
        return status >= 500 or status in (408, 429)
    low = text.lower()
    return any(t in low for t in _TRANSIENT_TEXT)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def translate_error(exc: BaseException, *, backend: str, key: str | None, op: str) -> Exception:
    """Map one backend exception to ours.

    Returns
    -------
    Exception
        :class:`ObjectNotFoundError` for a missing key, :class:`ObjectExistsError` for a lost
        create, our own errors unchanged, :class:`~icechunk_dist.StorageError` for the rest.
    """
    if isinstance(exc, ObjectNotFoundError | ObjectExistsError | InvalidInputError):
        return exc
    where = f"{backend} storage" if key is None else f"{key!r} in {backend} storage"
    if isinstance(exc, builtins.FileNotFoundError | obe.NotFoundError):
        return ObjectNotFoundError(f"object {where} not found", key=key)
    if isinstance(exc, obe.AlreadyExistsError | obe.PreconditionError):
        return ObjectExistsError(f"object {where} already exists", key=key)
    return StorageError(f"{op} of {where} failed: {_first_line(exc)}", key=key, cause=exc)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Jittered exponential backoff for transient backend failures.

    Attributes
    ----------
    attempts
        Total tries, the first included.
    base
        Delay before the second try, in seconds; doubles every try.
    cap
        Longest delay, in seconds.
    """

    attempts: int = 5
    base: float = 0.05
    cap: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based): "full jitter"."""
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


DEFAULT_RETRY = RetryPolicy()


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    backend: str,
    key: str | None,
    op: str,
    policy: RetryPolicy = DEFAULT_RETRY,
) -> T:
    """Await ``call()``, retrying transient failures, and translate whatever is finally raised.

    Raises
    ------
    ObjectNotFoundError
        The key does not exist (never retried).
    ObjectExistsError
        A create found the key taken (never retried).
    StorageError
        Any other failure, after ``policy.attempts`` tries for transient ones.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:  # the one translation boundary
            attempt += 1
            if attempt < policy.attempts and is_transient(exc):
                await asyncio.sleep(policy.delay(attempt - 1))
                continue
            raise translate_error(exc, backend=backend, key=key, op=op) from exc
