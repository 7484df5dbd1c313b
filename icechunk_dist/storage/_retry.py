"""Backend errors translated into ours, and transient ones retried: the one boundary.

Missing keys become :class:`ObjectNotFoundError`, lost creates :class:`ObjectExistsError`, and
everything else :class:`~icechunk_dist.StorageError` once transient failures (network trouble,
5xx, throttling) were retried with jittered exponential backoff.

This module holds the one retry policy of the storage layer (docs/design/010-one-retry-policy.md):
obstore's own per-request retries are off (:data:`OBSTORE_RETRY_CONFIG`), so every try that
:class:`RetryPolicy` counts is exactly one request on the wire, and one failing operation makes
at most ``DEFAULT_RETRY.attempts`` requests.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import obstore.exceptions as obe

from icechunk_dist.errors import InvalidInputError, StorageError
from icechunk_dist.storage._base import ObjectExistsError, ObjectNotFoundError

if TYPE_CHECKING:
    from obstore.store import RetryConfig

__all__ = [
    "DEFAULT_RETRY",
    "OBSTORE_RETRY_CONFIG",
    "SIMULATED_RETRY",
    "Attempts",
    "RetryPolicy",
    "is_transient",
    "translate_error",
    "with_retries",
]

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


def translate_error(exc: BaseException, *, backend: str, key: str | None, op: str,
                    attempts: int = 1) -> Exception:
    """Map one backend exception to ours (``attempts``: how many tries ended in failures).

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
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return StorageError(f"{op} of {where} failed{tries}: {_first_line(exc)}", key=key,
                        cause=exc)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Jittered exponential backoff for transient backend failures.

    Attributes
    ----------
    attempts
        Total tries of one operation, the first included. obstore does not retry on its own
        (:data:`OBSTORE_RETRY_CONFIG`), so this is also the most requests one failing
        operation sends.
    base
        Longest delay before the second try, in seconds; doubles every try.
    cap
        Longest delay, in seconds.

    Raises
    ------
    InvalidInputError
        If ``attempts`` is below 1 or a delay is negative.
    """

    attempts: int = 6
    base: float = 0.1
    cap: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidInputError(f"a retry policy needs attempts >= 1, got {self.attempts}")
        if self.base < 0 or self.cap < 0:
            raise InvalidInputError("retry delays must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based): "full jitter"."""
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


#: The storage layer's policy: 6 tries (5 retries), waits drawn from 0-0.1 s, 0-0.2 s, ...
#: 0-1.6 s (at most 3.1 s of waiting in all).
DEFAULT_RETRY = RetryPolicy()

#: :class:`~icechunk_dist.storage.FaultyStorage`'s stand-in for a backend's retries, with the
#: waits shrunk so that fault-injection tests stay fast.
SIMULATED_RETRY = RetryPolicy(attempts=4, base=0.001, cap=0.01)

#: obstore's own retries, off: a retry inside obstore would multiply with ours (it used to be
#: 3 per request under our 5 tries: 20 requests for one failing operation).
OBSTORE_RETRY_CONFIG: RetryConfig = {"max_retries": 0}


class Attempts:
    """The tries of one operation under a :class:`RetryPolicy`: every retry loop of the
    storage layer counts and waits through one of these.

    Attributes
    ----------
    failed
        Failed tries so far.
    """

    __slots__ = ("failed", "policy")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failed = 0

    async def retry(self, transient: bool) -> bool:
        """Count one failed try; if it was ``transient`` and the policy allows another, wait
        the backoff and return True, else return False (the caller raises)."""
        self.failed += 1
        if not transient or self.failed >= self.policy.attempts:
            return False
        await asyncio.sleep(self.policy.delay(self.failed - 1))
        return True


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
    tries = Attempts(policy)
    while True:
        try:
            return await call()
        except Exception as exc:  # the one translation boundary
            if await tries.retry(is_transient(exc)):
                continue
            raise translate_error(exc, backend=backend, key=key, op=op,
                                  attempts=tries.failed) from exc
