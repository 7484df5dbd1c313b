"""The slot where the zarr store class registers itself.

``icechunk_dist.store`` (a layer above sessions) puts :class:`~icechunk_dist.IcechunkStore`
here when it is imported (``import icechunk_dist`` always imports it), so that
``session.store`` can build stores while this layer never imports the store module.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register_store_class", "store_class"]

_STORE_CLASS: Any = None


def register_store_class(cls: Any) -> None:
    """Called once by ``icechunk_dist.store``."""
    global _STORE_CLASS
    _STORE_CLASS = cls


def store_class() -> Any:
    """The registered store class (``IcechunkStore``)."""
    if _STORE_CLASS is None:  # pragma: no cover - icechunk_dist/__init__ imports the store
        raise RuntimeError("import icechunk_dist before using session.store")
    return _STORE_CLASS
