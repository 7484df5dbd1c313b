"""Sessions (layer 3): a readable view = snapshot + change-set; writes, fork, merge, commit
through the one commit pipeline, rebase, and the one history walker."""

from icechunk_dist.session._diff import Diff
from icechunk_dist.session._session import Session, SessionSavepoint
from icechunk_dist.session.forks import ForkSession

__all__ = ["Diff", "ForkSession", "Session", "SessionSavepoint"]
