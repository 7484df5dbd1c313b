"""zarr's own store conformance suite (``zarr.testing.store.StoreTests``) run on IcechunkStore.

Each test gets a fresh in-memory repository and a writable session on ``main``. The ``set`` and
``get`` helpers go through the session API directly, so the store methods are tested against an
independent path.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.buffer.cpu import Buffer as CpuBuffer
from zarr.testing.store import StoreTests

from icechunk_dist import (
    IcechunkStore,
    Repository,
    SessionStateError,
    in_memory_storage,
    local_filesystem_storage,
)


class TestIcechunkStore(StoreTests[IcechunkStore, CpuBuffer]):
    store_cls = IcechunkStore
    buffer_cls = CpuBuffer

    async def set(self, store: IcechunkStore, key: str, value: Buffer) -> None:
        await store.session.set_key(key, value.to_bytes())

    async def get(self, store: IcechunkStore, key: str) -> Buffer:
        data = await store.session.get_key(key)
        assert data is not None, f"{key!r} is missing"
        return self.buffer_cls.from_bytes(data)

    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        repo = Repository.create(in_memory_storage())
        return {"session": repo.writable_session("main")}

    def test_store_repr(self, store: IcechunkStore) -> None:
        text = repr(store)
        assert text.startswith("<IcechunkStore writable over <icechunk_dist.Session writable")
        assert "branch 'main'" in text
        assert store.session.snapshot_id in text

    def test_store_supports_writes(self, store: IcechunkStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: IcechunkStore) -> None:
        assert store.supports_listing

    # Deliberate difference from the base test: a store over a *writable* session refuses to
    # pickle (its change-set would be lost or applied twice in another process); the
    # supported way to send writes elsewhere is session.fork(). Read-only stores pickle.
    async def test_serializable_store(self, store: IcechunkStore, tmp_path: Any) -> None:
        with pytest.raises(SessionStateError, match=r"fork\(\)"):
            pickle.dumps(store)

        repo = Repository.create(local_filesystem_storage(tmp_path / "repo"))
        session = repo.writable_session("main")
        arr = zarr.create_array(session.store, name="a", shape=(6,), chunks=(2,), dtype="i4")
        arr[:] = np.arange(6, dtype="i4")
        session.commit("data")

        ro = repo.readonly_session("main").store
        new_store: IcechunkStore = pickle.loads(pickle.dumps(ro))
        assert new_store == ro
        assert new_store.read_only and ro.read_only
        observed = await new_store.get("a/c/1", prototype=default_buffer_prototype())
        assert observed is not None
        assert observed.to_bytes() == (await ro.get("a/c/1", default_buffer_prototype())
                                       ).to_bytes()
        got = zarr.open_array(new_store, path="a", mode="r")[:]
        np.testing.assert_array_equal(got, np.arange(6, dtype="i4"))

    # Deliberate differences from the base tests below: as Icechunk's, the store takes zarr
    # v3 keys only (``<path>/zarr.json`` and chunk keys), so the base tests' free-form keys
    # ("foo", "k", "foo/bar/foobar_first_child") are replaced by zarr keys; what each test
    # checks is unchanged.
    async def test_with_read_only_store(self, open_kwargs: dict[str, Any]) -> None:
        store = await self.store_cls.open(**{**open_kwargs, "read_only": True})
        assert store.read_only
        with pytest.raises(ValueError,
                           match="store was opened in read-only mode and does not support "
                                 "writing"):
            await store.set("foo/zarr.json", self.buffer_cls.from_bytes(b"bar"))
        writer = store.with_read_only(read_only=False)
        assert not writer._is_open
        assert not writer.read_only
        await writer.set("foo/zarr.json", self.buffer_cls.from_bytes(b"bar"))
        await writer.delete("foo/zarr.json")
        assert store.read_only
        with pytest.raises(ValueError, match="read-only"):
            await store.set("foo/zarr.json", self.buffer_cls.from_bytes(b"bar"))

    async def test_list_dir(self, store: IcechunkStore) -> None:
        buf = self.buffer_cls.from_bytes
        roots_and_keys = [
            ("foo", {"foo/zarr.json": buf(b"bar"), "foo/c/1": buf(b"\x01")}),
            ("foo/bar", {"foo/bar/c/0": buf(b"1"),
                         "foo/bar/foobar_second_child/zarr.json": buf(b"2")}),
        ]
        assert [k async for k in store.list_dir("")] == []
        for root, store_dict in roots_and_keys:
            assert [k async for k in store.list_dir(root)] == []
            await store._set_many(store_dict.items())
            expected = {k.removeprefix(root + "/").split("/")[0] for k in store_dict}
            assert sorted([k async for k in store.list_dir(root)]) == sorted(expected)
            assert sorted([k async for k in store.list_dir(root + "/")]) == sorted(expected)

    async def test_set_if_not_exists(self, store: IcechunkStore) -> None:
        key = "x/c/0"
        data_buf = self.buffer_cls.from_bytes(b"0000")
        await self.set(store, key, data_buf)
        new = self.buffer_cls.from_bytes(b"1111")
        await store.set_if_not_exists(key, new)  # no error
        result = await store.get(key, default_buffer_prototype())
        assert result == data_buf
        await store.set_if_not_exists("x/c/1", new)  # no error
        result = await store.get("x/c/1", default_buffer_prototype())
        assert result == new
