"""Sessions (layer 3): a readable view = snapshot + change-set; writes, fork, merge, commit."""

from icechunk_dist.session._session import ChangeSummary, ForkSession, Session

__all__ = ["ChangeSummary", "ForkSession", "Session"]
