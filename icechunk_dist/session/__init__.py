"""Sessions (layer 3): a readable view = snapshot + change-set; writes, fork, merge, commit."""

from icechunk_dist.session._diff import Diff
from icechunk_dist.session._session import ForkSession, Session

__all__ = ["Diff", "ForkSession", "Session"]
