"""Commit with optimistic retries, and rebase onto a moved branch."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

from icechunk_dist.errors import ConflictError

if TYPE_CHECKING:
    from icechunk_dist.conflicts import ConflictSolver
    from icechunk_dist.session._session import Session

__all__ = ["commit_with_retries", "rebase_session"]


async def commit_with_retries(session: Session, message: str, meta: dict[str, Any],
                              solver: ConflictSolver | None, tries: int) -> str:
    attempt = 0
    while True:
        try:
            return await session._try_commit_once(message, meta)
        except ConflictError as e:
            if solver is None or e.actual_parent is None:
                raise
            attempt += 1
            if attempt > tries:
                raise
        await rebase_session(session, solver)
        # jittered exponential backoff between attempts (full jitter, capped)
        await asyncio.sleep(random.uniform(0, min(1.0, 0.005 * 2 ** min(attempt, 10))))


async def rebase_session(session: Session, solver: ConflictSolver) -> None:
    raise NotImplementedError("rebase arrives with the conflicts module")
