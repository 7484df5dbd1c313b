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
        await session.store.set("foo", self.buffer_cls.from_bytes(b"\x01\x02\x03\x04"))
        session.commit("data")

        ro = repo.readonly_session("main").store
        new_store: IcechunkStore = pickle.loads(pickle.dumps(ro))
        assert new_store == ro
        assert new_store.read_only and ro.read_only
        observed = await new_store.get("foo", prototype=default_buffer_prototype())
        assert observed is not None and observed.to_bytes() == b"\x01\x02\x03\x04"
        got = zarr.open_array(new_store, path="a", mode="r")[:]
        np.testing.assert_array_equal(got, np.arange(6, dtype="i4"))
