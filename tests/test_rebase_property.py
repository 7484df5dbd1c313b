"""Model-based property test of rebase-on-commit (issue 4).

Two or three writers open sessions on ``main`` at random moments; each writes a few random
chunks of two arrays (some with the fill value, which deletes the chunk) and maybe appends a
chunk to ``a``, then commits with ``rebase_with=BasicConflictSolver()`` (chunk conflicts:
ours wins) in a random order. The
final state must equal replaying the landed commits' writes, in history order (oldest
first), into a numpy model. Which writers fail is predicted too: only an appender whose
array was appended by another writer after it opened (a metadata double update).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icechunk_dist import (
    BasicConflictSolver,
    ConflictType,
    RebaseFailedError,
    Repository,
    Session,
    in_memory_storage,
)

A_LEN, A_CHUNK = 16, 2  # "a": 1-D, 8 chunks, may grow
B_SHAPE, B_CHUNK = (4, 4), (2, 2)  # "b": 2-D, 2x2 chunks
FILL = -1

# (array, chunk coordinate, clear): a clear writes the fill value, so zarr deletes the chunk
write_a = st.tuples(st.just("a"), st.tuples(st.integers(0, A_LEN // A_CHUNK - 1)),
                    st.booleans())
write_b = st.tuples(st.just("b"), st.tuples(st.integers(0, 1), st.integers(0, 1)),
                    st.booleans())


@dataclass
class Writer:
    index: int
    writes: list[tuple[str, tuple[int, ...], bool]]
    append: bool
    session: Session | None = None
    base_len: int = 0  # length of "a" when it opened
    opened_after: int = 0  # number of landed appends when it opened

    def value(self, k: int) -> int:
        if k < len(self.writes) and self.writes[k][2]:
            return FILL
        return 100 * (self.index + 1) + k  # unique per writer and write

    @property
    def append_value(self) -> int:
        return self.value(99)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Writer], list[int]]:
    n = draw(st.integers(2, 3))
    writers = [Writer(i, draw(st.lists(st.one_of(write_a, write_b), min_size=1, max_size=4)),
                      draw(st.booleans())) for i in range(n)]
    # each writer appears twice: the first time it opens (and writes), the second it commits
    events = draw(st.permutations([i for i in range(n) for _ in (0, 1)]))
    return writers, list(events)


def sel(name: str, coord: tuple[int, ...]) -> tuple[slice, ...]:
    chunk = (A_CHUNK,) if name == "a" else B_CHUNK
    return tuple(slice(c * k, (c + 1) * k) for c, k in zip(coord, chunk, strict=True))


def open_and_write(repo: Repository, w: Writer, landed_appends: int) -> None:
    s = w.session = repo.writable_session("main")
    a = zarr.open_array(s.store, path="a", mode="r+")
    b = zarr.open_array(s.store, path="b", mode="r+")
    w.base_len, w.opened_after = a.shape[0], landed_appends
    for k, (name, coord, _) in enumerate(w.writes):
        (a if name == "a" else b)[sel(name, coord)] = w.value(k)
    if w.append:
        a.resize((w.base_len + A_CHUNK,))
        a[w.base_len:] = w.append_value


def replay(model: dict[str, np.ndarray], w: Writer) -> None:
    """Apply one landed commit's writes to the model."""
    if w.append:
        assert model["a"].shape[0] == w.base_len  # appends land on the shape they grew
        model["a"] = np.concatenate([model["a"], np.full(A_CHUNK, w.append_value, "i4")])
    for k, (name, coord, _) in enumerate(w.writes):
        model[name][sel(name, coord)] = w.value(k)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_final_state_is_landed_commits_replayed_in_history_order(
        scenario: tuple[list[Writer], list[int]]) -> None:
    writers, events = scenario
    repo = Repository.create(in_memory_storage())
    s = repo.writable_session("main")
    root = zarr.open_group(s.store, mode="w")
    for name, shape, chunks in (("a", (A_LEN,), (A_CHUNK,)), ("b", B_SHAPE, B_CHUNK)):
        root.create_array(name, shape=shape, chunks=chunks, dtype="i4", fill_value=FILL)[:] = 0
    setup_id = s.commit("setup")

    landed_appends = 0
    landed: dict[str, Writer] = {}
    failed: set[int] = set()
    for i in events:
        w = writers[i]
        if w.session is None:
            open_and_write(repo, w, landed_appends)
            continue
        appended_meanwhile = landed_appends > w.opened_after
        try:
            sid = w.session.commit(f"writer {i}", {"writer": i},
                                   rebase_with=BasicConflictSolver())
        except RebaseFailedError as e:
            # the only unsolvable conflict here: two appends to "a"
            assert w.append and appended_meanwhile, e
            assert {(c.conflict_type, c.path) for c in e.conflicts} == {
                (ConflictType.ZarrMetadataDoubleUpdate, "/a")}
            failed.add(i)
            continue
        assert not (w.append and appended_meanwhile), "a double append must not land"
        landed[sid] = w
        landed_appends += w.append

    history = list(repo.ancestry(branch="main"))
    assert history[len(landed)].id == setup_id and len(history) == len(landed) + 2
    assert set(landed) == {h.id for h in history[:len(landed)]}
    assert failed | {w.index for w in landed.values()} == set(range(len(writers)))

    model = {"a": np.zeros(A_LEN, "i4"), "b": np.zeros(B_SHAPE, "i4")}
    for h in reversed(history[:len(landed)]):  # oldest first
        assert h.metadata["writer"] == landed[h.id].index
        replay(model, landed[h.id])

    ro = repo.readonly_session("main")
    for name in ("a", "b"):
        got = zarr.open_array(ro.store, path=name, mode="r")[:]
        np.testing.assert_array_equal(got, model[name], err_msg=f"array {name}")
