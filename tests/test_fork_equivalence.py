"""Equivalence: writes done through pickled forks equal the same writes done serially (issue 3).

A Hypothesis state machine draws a random sequence of operations (create an array, write a
random region, delete a chunk, resize, append, commit) and applies it twice, on two branches
of one repository:

- ``serial``: every operation directly in one writable session;
- ``forks``: every data or shape operation in a fresh fork (or two forks, merged together
  first) that travels as a pickle (``pickle`` or ``cloudpickle``) to a simulated other process
  (an empty registry of shared forks, as in a fresh worker), is written there through
  ``fork.store`` with zarr, travels back as a pickle and is merged into the session.

After every step both sessions show identical contents (metadata and values of every node),
which also match a NumPy model; at every commit and at the end the committed contents of both
branches are identical.

One rule of forks shapes the sequences: a fork starts from the base snapshot plus its parent's
pending *metadata*, not its pending chunk writes, so two forks writing one chunk in one
transaction conflict (``test_fork.py`` proves that conflict is reported). When an operation
would touch a chunk already written in the current transaction, the machine commits both
sessions first, as a user would.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import zarr
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from repo_contents import assert_same_contents, contents

import icechunk_dist as icd
from icechunk_dist import ForkSession, Repository
from icechunk_dist._sync import run as sync_run
from icechunk_dist.session import forks as _session

PICKLERS = {"pickle": pickle, "cloudpickle": cloudpickle}
NAMES = ["a", "b", "g/c"]

Region = tuple[slice, ...]


@contextlib.contextmanager
def _other_process() -> Iterator[None]:
    """Simulate a fresh worker process: an empty registry of shared forks."""
    saved = list(_session._REGISTRY.items())
    _session._REGISTRY.clear()
    try:
        yield
    finally:
        _session._REGISTRY.clear()
        _session._REGISTRY.update(saved)


def _chunks_of(region: Region, chunks: tuple[int, ...]) -> set[tuple[int, ...]]:
    import itertools

    ranges = [range(sl.start // c, -(-sl.stop // c)) for sl, c in zip(region, chunks,
                                                                       strict=True)]
    return set(itertools.product(*ranges))


def _grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> set[tuple[int, ...]]:
    return _chunks_of(tuple(slice(0, s) for s in shape), chunks)


class ForkEquivalence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="icechunk-equiv-")
        self.repo = Repository.create(icd.local_filesystem_storage(self.tmp))
        s = self.repo.writable_session("main")
        zarr.group(store=s.store, attributes={"machine": "fork equivalence"})
        tip = s.commit("root group")
        for b in ("serial", "forks"):
            self.repo.create_branch(b, tip)
        self.serial = self.repo.writable_session("serial")
        self.forked = self.repo.writable_session("forks")
        self.model: dict[str, np.ndarray] = {}
        self.chunks: dict[str, tuple[int, ...]] = {}
        self.unreliable: set[str] = set()  # shrunk arrays: zarr keeps stale edge data
        self.dirty: dict[str, set[tuple[int, ...]]] = {}  # chunks written this transaction
        self.commits = 0

    # ------------------------------------------------------------------ fork plumbing
    def _fork_job(self, job: Any, pickler: str, mode: str, parts: int = 1) -> None:
        """Run ``job(fork_store, part)`` for each part in shipped forks; merge the results."""
        mod = PICKLERS[pickler]
        parent = self.forked.fork()
        if mode == "shared":
            assert parts == 1
            blob = mod.dumps(parent)
            with _other_process():
                remote = mod.loads(blob)
                assert remote is not parent
                job(remote.store, 0)
                back_blob = mod.dumps(remote)
            back = pickle.loads(back_blob)
            # sent back to the process holding the fork: a copy of its own, with the writes
            assert back is not parent
            self.forked.merge(back)
            return
        returned: list[ForkSession] = []
        for part in range(parts):
            blob = mod.dumps(parent.child())
            with _other_process():
                remote = mod.loads(blob)
                job(remote.store, part)
                back_blob = mod.dumps(remote)
            back = pickle.loads(back_blob)
            assert isinstance(back, ForkSession)
            returned.append(back)
        first, *rest = returned
        self.forked.merge(first.merge(*rest) if rest else first)

    def _touch(self, name: str, coords: set[tuple[int, ...]]) -> None:
        """Commit first if a fork would write a chunk already written this transaction."""
        if coords & self.dirty.get(name, set()):
            self._commit_both()
        self.dirty.setdefault(name, set()).update(coords)

    def _commit_both(self) -> None:
        self.commits += 1
        for s in (self.serial, self.forked):
            s.commit(f"step commit {self.commits}", allow_empty=True)
        self.serial = self.repo.writable_session("serial")
        self.forked = self.repo.writable_session("forks")
        self.dirty = {}
        assert_same_contents(contents(self.repo.readonly_session("serial")),
                     contents(self.repo.readonly_session("forks")))

    # ------------------------------------------------------------------ rules
    @initialize()
    def start(self) -> None:
        pass

    @precondition(lambda self: len(self.model) < len(NAMES))
    @rule(data=st.data())
    def create_array(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n in NAMES if n not in self.model]))
        ndim = data.draw(st.integers(1, 2))
        shape = tuple(data.draw(st.integers(1, 12)) for _ in range(ndim))
        chunks = tuple(data.draw(st.integers(1, 5)) for _ in range(ndim))
        dtype = data.draw(st.sampled_from(["i4", "f8"]))
        for s in (self.serial, self.forked):
            zarr.create_array(s.store, name=name, shape=shape, chunks=chunks, dtype=dtype,
                              fill_value=0, attributes={"name": name})
        self.model[name] = np.zeros(shape, dtype)
        self.chunks[name] = chunks

    def _draw_region(self, data: st.DataObject, shape: tuple[int, ...]) -> Region:
        region = []
        for n in shape:
            lo = data.draw(st.integers(0, n - 1))
            hi = data.draw(st.integers(lo + 1, n))
            region.append(slice(lo, hi))
        return tuple(region)

    @precondition(lambda self: any(m.size for m in self.model.values()))
    @rule(data=st.data(), pickler=st.sampled_from(sorted(PICKLERS)),
          mode=st.sampled_from(["shared", "child", "split"]))
    def write_region(self, data: st.DataObject, pickler: str, mode: str) -> None:
        name = data.draw(st.sampled_from(sorted(n for n, m in self.model.items() if m.size)))
        model, chunks = self.model[name], self.chunks[name]
        region = self._draw_region(data, model.shape)
        seed = data.draw(st.integers(0, 2**32 - 1))
        size = tuple(sl.stop - sl.start for sl in region)
        # small values: many chunks end up equal to the fill value (zarr deletes those)
        values = np.random.default_rng(seed).integers(0, 3, size=size).astype(model.dtype)

        self._touch(name, _chunks_of(region, chunks))
        zarr.open_array(self.serial.store, path=name, mode="r+")[region] = values

        parts = [(region, values)]
        c0, lo, hi = chunks[0], region[0].start, region[0].stop
        cuts = [b for b in range((lo // c0 + 1) * c0, hi, c0)]
        if mode == "split" and cuts:  # two forks, split at a chunk boundary of axis 0
            b = cuts[len(cuts) // 2]
            parts = [((slice(lo, b), *region[1:]), values[: b - lo]),
                     ((slice(b, hi), *region[1:]), values[b - lo:])]
        elif mode == "split":
            mode = "child"

        def job(store: Any, part: int) -> None:
            reg, vals = parts[part]
            zarr.open_array(store, path=name, mode="r+")[reg] = vals

        self._fork_job(job, pickler, mode, parts=len(parts))
        model[region] = values

    @precondition(lambda self: any(m.size for m in self.model.values()))
    @rule(data=st.data(), pickler=st.sampled_from(sorted(PICKLERS)))
    def delete_chunk(self, data: st.DataObject, pickler: str) -> None:
        name = data.draw(st.sampled_from(sorted(n for n, m in self.model.items() if m.size)))
        model, chunks = self.model[name], self.chunks[name]
        coord = tuple(data.draw(st.integers(0, -(-n // c) - 1))
                      for n, c in zip(model.shape, chunks, strict=True))
        key = f"{name}/c/" + "/".join(map(str, coord))

        self._touch(name, {coord})
        sync_run(self.serial.store.delete(key))

        def job(store: Any, part: int) -> None:
            sync_run(store.delete(key))

        self._fork_job(job, pickler, "child")
        model[tuple(slice(i * c, (i + 1) * c) for i, c in zip(coord, chunks, strict=True))] = 0

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), pickler=st.sampled_from(sorted(PICKLERS)),
          mode=st.sampled_from(["shared", "child"]))
    def resize(self, data: st.DataObject, pickler: str, mode: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        model, chunks = self.model[name], self.chunks[name]
        new_shape = tuple(data.draw(st.integers(1, 14)) for _ in model.shape)

        # zarr deletes the chunks that fall outside the new grid
        self._touch(name, _grid(model.shape, chunks) - _grid(new_shape, chunks))
        zarr.open_array(self.serial.store, path=name, mode="r+").resize(new_shape)

        def job(store: Any, part: int) -> None:
            zarr.open_array(store, path=name, mode="r+").resize(new_shape)

        self._fork_job(job, pickler, mode)
        if any(n < o for n, o in zip(new_shape, model.shape, strict=True)):
            self.unreliable.add(name)
        grown = np.zeros(new_shape, model.dtype)
        keep = tuple(slice(0, min(a, b)) for a, b in zip(new_shape, model.shape, strict=True))
        grown[keep] = model[keep]
        self.model[name] = grown

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), pickler=st.sampled_from(sorted(PICKLERS)),
          mode=st.sampled_from(["shared", "child"]))
    def append(self, data: st.DataObject, pickler: str, mode: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        model, chunks = self.model[name], self.chunks[name]
        k = data.draw(st.integers(1, 6))
        seed = data.draw(st.integers(0, 2**32 - 1))
        values = np.random.default_rng(seed).integers(
            1, 5, size=(k, *model.shape[1:])).astype(model.dtype)

        new_region = (slice(model.shape[0], model.shape[0] + k),
                      *(slice(0, n) for n in model.shape[1:]))
        self._touch(name, _chunks_of(new_region, chunks))
        zarr.open_array(self.serial.store, path=name, mode="r+").append(values, axis=0)

        def job(store: Any, part: int) -> None:
            zarr.open_array(store, path=name, mode="r+").append(values, axis=0)

        self._fork_job(job, pickler, mode)
        self.model[name] = np.concatenate([model, values], axis=0)

    @rule()
    def commit(self) -> None:
        self._commit_both()

    # ------------------------------------------------------------------ checks
    @invariant()
    def same_contents_as_serial_and_model(self) -> None:
        serial, forked = contents(self.serial), contents(self.forked)
        assert_same_contents(serial, forked)
        assert sorted(p for p, v in serial.items() if v[0] == "array") == sorted(self.model)
        for name, model in self.model.items():
            got = serial[name][2]
            assert got.shape == model.shape, name
            if name not in self.unreliable:
                np.testing.assert_array_equal(got, model, err_msg=name)

    def teardown(self) -> None:
        try:
            self._commit_both()
            tips = [self.repo.lookup_branch(b) for b in ("serial", "forks")]
            assert tips[0] != tips[1]
            assert [i.message for i in self.repo.ancestry(branch="serial")] == \
                [i.message for i in self.repo.ancestry(branch="forks")]
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


ForkEquivalence.TestCase.settings = settings(
    max_examples=25, stateful_step_count=15, deadline=None, derandomize=False,
)
TestForkEquivalence = ForkEquivalence.TestCase
