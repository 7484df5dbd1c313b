"""Test helper: random zarr edits of one small hierarchy, and what a valid tree is.

The base tree (``make_base``)::

    /            group
    /x           array (4,), chunks (2,), all 1
    /g           group, attrs {"v": 0}
    /g/a         array, all 2
    /g/h         group
    /g/h/b       array, all 3
    g/notes      a key that is not zarr's (loose)

``edits()`` draws a short list of edits through the public zarr API: attribute updates,
deletes of arrays and groups, creations of arrays and groups (some inside groups that do
not exist yet, which zarr creates), chunk writes, chunk deletes (writing the fill value)
and writes of loose keys. Paths come from small fixed sets, so two lists of edits often
touch the same nodes. An edit that does not apply to what the session sees (writing an
array that it deleted, creating a node that exists) is skipped, the same way every time.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import zarr
from hypothesis import strategies as st
from zarr.core.buffer import default_buffer_prototype

from icechunk_dist import IcechunkDistError, Repository
from icechunk_dist._sync import run

Edit = tuple[Any, ...]

NODES = ["x", "g", "g/a", "g/h", "g/h/b", "new", "g/new", "k", "k/new"]
NEW_ARRAYS = ["new", "g/new", "g/h/new", "k/new"]
NEW_GROUPS = ["k", "g/h2"]
ARRAYS = ["x", "g/a", "g/h/b", "new", "g/new", "g/h/new", "k/new"]
KEYS = ["g/notes", "notes", "g/h/notes"]


def make_base(repo: Repository) -> str:
    """Commit the base tree on ``main``; return its snapshot id."""
    s = repo.writable_session("main")
    root = zarr.open_group(s.store, mode="w")
    root.create_array("x", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)[:] = 1
    g = root.create_group("g", attributes={"v": 0})
    g.create_array("a", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)[:] = 2
    g.create_group("h").create_array("b", shape=(4,), chunks=(2,), dtype="i4",
                                     fill_value=0)[:] = 3
    set_key(s.store, "g/notes", b"base notes")
    return s.commit("base")


edit = st.one_of(
    st.tuples(st.just("attrs"), st.sampled_from(NODES), st.integers(1, 2)),
    st.tuples(st.just("delete"), st.sampled_from(NODES)),
    st.tuples(st.just("array"), st.sampled_from(NEW_ARRAYS), st.sampled_from(["i4", "i2"])),
    st.tuples(st.just("group"), st.sampled_from(NEW_GROUPS), st.integers(0, 1)),
    st.tuples(st.just("write"), st.sampled_from(ARRAYS), st.integers(0, 1),
              st.sampled_from([0, 5, 6])),  # 0 is the fill value: zarr deletes the chunk
    st.tuples(st.just("key"), st.sampled_from(KEYS), st.sampled_from([b"1", b"2"])),
)


def edits(max_size: int = 4) -> st.SearchStrategy[list[Edit]]:
    return st.lists(edit, max_size=max_size)


def set_key(store: Any, key: str, data: bytes) -> None:
    """Write a key that is not a zarr key (a loose object) through the store's session: the
    store itself refuses such keys, as Icechunk's does."""
    run(store.session.set_key(key, data))


def apply_edits(store: Any, todo: list[Edit]) -> None:
    """Apply ``todo`` through zarr on ``store`` (a session's or a fork's)."""
    for e in todo:
        with contextlib.suppress(KeyError, FileNotFoundError, ValueError, TypeError,
                                 IcechunkDistError, zarr.errors.BaseZarrError):
            _apply(store, e)  # raises if not applicable to what this session sees


def _apply(store: Any, e: Edit) -> None:
    kind, path = e[0], e[1]
    if kind == "attrs":
        zarr.open(store, path=path, mode="r+").attrs.update({"t": e[2]})
    elif kind == "delete":
        parent, _, name = path.rpartition("/")
        del zarr.open_group(store, path=parent, mode="r+")[name]
    elif kind == "array":
        zarr.create_array(store, name=path, shape=(4,), chunks=(2,), dtype=e[2], fill_value=0)
    elif kind == "group":
        zarr.create_group(store, path=path, attributes={"w": e[2]})
    elif kind == "write":
        zarr.open_array(store, path=path, mode="r+")[2 * e[2]:2 * e[2] + 2] = e[3]
    elif kind == "key":
        parent = path.rpartition("/")[0]
        if parent:
            zarr.open_group(store, path=parent, mode="r")  # only inside an existing group
        set_key(store, path, e[2])


def dump(store: Any) -> dict[str, bytes]:
    """Every key ``store`` lists, with its bytes."""
    async def go() -> dict[str, bytes]:
        proto = default_buffer_prototype()
        out = {}
        async for k in store.list():
            buf = await store.get(k, proto)
            assert buf is not None, k
            out[k] = buf.to_bytes()
        return out
    return run(go())


def check_valid_tree(keys: dict[str, bytes]) -> None:
    """A valid Zarr hierarchy: every node's parent exists and is a group (the root may be
    implicit), every other key is a chunk of an existing array or sits in a group."""
    meta = {k[:-len("zarr.json")].rstrip("/"): json.loads(v) for k, v in keys.items()
            if k == "zarr.json" or k.endswith("/zarr.json")}

    def is_group(p: str) -> bool:
        return (p == "" and p not in meta) or (p in meta and meta[p]["node_type"] == "group")

    for p in meta:
        if p:
            assert is_group(p.rpartition("/")[0]), f"node {p!r} has no parent group"
    arrays = [p for p, d in meta.items() if d["node_type"] == "array"]
    for k in keys:
        if k == "zarr.json" or k.endswith("/zarr.json"):
            continue
        if any(k.startswith(f"{a}/c/") for a in arrays):
            continue
        assert is_group(k.rpartition("/")[0]), f"key {k!r} is not inside a group"
