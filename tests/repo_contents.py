"""Test helper: everything a session shows, and an exact comparison of two such views."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

import icechunk_dist as icd


def contents(session: icd.Session) -> dict[str, Any]:
    """Every node of the repository as seen by ``session``: metadata and full values."""
    root = zarr.open_group(session.store, mode="r")
    out: dict[str, Any] = {"": ("group", dict(root.attrs))}
    for path, node in root.members(max_depth=None):
        if isinstance(node, zarr.Array):
            out[path] = ("array", node.metadata.to_dict(), node[...])
        else:
            out[path] = ("group", dict(node.attrs))
    return out


def assert_same_contents(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Same nodes, same metadata, same dtypes and values."""
    assert sorted(a) == sorted(b)
    for path in a:
        ka, kb = a[path], b[path]
        assert ka[0] == kb[0], path
        assert ka[1] == kb[1], path
        if ka[0] == "array":
            assert ka[2].dtype == kb[2].dtype, path
            np.testing.assert_array_equal(ka[2], kb[2], err_msg=path)
