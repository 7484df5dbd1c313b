"""Ref names: every name that validates can be stored, on every backend (docs/spec.md section 6).

A name is one key component (``refs/branch.<name>/...``, ``refs/tag.<name>/...``); a local
file name holds 255 bytes, so names hold at most 248 bytes of UTF-8. The boundary is tested
end to end on local disk, where a longer name used to pass validation and then fail as a
storage error that said to retry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.refs import MAX_REF_NAME_BYTES
from icechunk_dist.storage import Storage

# the longest valid names: one-, two-, three- and four-byte UTF-8 characters, and a mix
LONGEST = {
    "ascii": "b" * 248,
    "two-byte": "é" * 124,
    "three-byte": "€" * 82 + "xx",
    "four-byte": "😀" * 62,
    "mixed": "v1.0-" + "ü" * 100 + "😀" * 10 + "x" * 3,
}
# one byte more than allowed, and far more characters than bytes would suggest
TOO_LONG = {
    "ascii": "b" * 249,
    "two-byte": "é" * 124 + "a",
    "two-byte-chars": "é" * 125,  # 125 characters, 250 bytes
    "four-byte": "😀" * 62 + "x",
    "four-byte-255-chars": "😀" * 200,  # 200 characters (passed the old 255-character rule)
}


def test_the_limit() -> None:
    assert MAX_REF_NAME_BYTES == 248 == 255 - len("branch.")
    for name in LONGEST.values():
        assert len(name.encode()) == MAX_REF_NAME_BYTES, name
    for name in TOO_LONG.values():
        assert len(name.encode()) > MAX_REF_NAME_BYTES, name


def _repo(tmp_path: Path) -> icd.Repository:
    return icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))


def _write(repo: icd.Repository, branch: str, value: int) -> str:
    s = repo.writable_session(branch)
    a = zarr.create_array(s.store, name="x", shape=(4,), chunks=(2,), dtype="i4",
                          fill_value=-1, overwrite=True)
    a[:] = value
    return s.commit(f"x={value}")


def _x(session: icd.Session) -> np.ndarray:
    return zarr.open_array(session.store, path="x", mode="r")[:]


@pytest.mark.parametrize("alphabet", sorted(LONGEST))
def test_branch_name_boundary(tmp_path: Path, alphabet: str) -> None:
    repo = _repo(tmp_path)
    base = repo.lookup_branch("main")
    name = LONGEST[alphabet]
    repo.create_branch(name, base)
    assert repo.list_branches() == {"main", name}
    assert repo.lookup_branch(name) == base
    sid = _write(repo, name, 7)
    assert repo.lookup_branch(name) == sid
    assert [h.id for h in repo.ancestry(branch=name)] == [sid, base]
    np.testing.assert_array_equal(_x(repo.readonly_session(name)), [7, 7, 7, 7])
    repo.reset_branch(name, base)
    assert repo.lookup_branch(name) == base
    repo.delete_branch(name)
    assert repo.list_branches() == {"main"}
    with pytest.raises(icd.NotFoundError):
        repo.lookup_branch(name)
    # one byte more is refused before anything is written, saying the limit
    for long in TOO_LONG.values():
        with pytest.raises(icd.InvalidInputError, match="at most 248"):
            repo.create_branch(long, base)
    assert sorted(p.name for p in (tmp_path / "repo" / "refs").iterdir()) == [
        f"branch.{name}"]


@pytest.mark.parametrize("alphabet", sorted(LONGEST))
def test_tag_name_boundary(tmp_path: Path, alphabet: str) -> None:
    repo = _repo(tmp_path)
    sid = _write(repo, "main", 3)
    name = LONGEST[alphabet]
    repo.create_tag(name, sid)
    assert repo.list_tags() == {name}
    assert repo.lookup_tag(name) == sid
    assert next(h.id for h in repo.ancestry(tag=name)) == sid
    np.testing.assert_array_equal(_x(repo.readonly_session(tag=name)), [3, 3, 3, 3])
    repo.delete_tag(name)
    assert repo.list_tags() == set()
    with pytest.raises(icd.AlreadyExistsError):
        repo.create_tag(name, sid)  # deleted names are never reused
    for long in TOO_LONG.values():
        with pytest.raises(icd.InvalidInputError, match="at most 248"):
            repo.create_tag(long, sid)
    assert sorted(p.name for p in (tmp_path / "repo" / "refs").iterdir()) == [
        "branch.main", f"tag.{name}"]


@pytest.mark.parametrize("kind", sorted(TOO_LONG))
def test_too_long_names_are_invalid_input_everywhere(tmp_path: Path, kind: str) -> None:
    repo = _repo(tmp_path)
    sid = repo.lookup_branch("main")
    name = TOO_LONG[kind]
    calls = [
        lambda: repo.create_branch(name, sid),
        lambda: repo.lookup_branch(name),
        lambda: repo.reset_branch(name, sid),
        lambda: repo.delete_branch(name),
        lambda: repo.writable_session(name),
        lambda: repo.readonly_session(name),
        lambda: repo.create_tag(name, sid),
        lambda: repo.lookup_tag(name),
        lambda: repo.delete_tag(name),
        lambda: repo.readonly_session(tag=name),
    ]
    for call in calls:
        with pytest.raises(icd.InvalidInputError,
                           match=r"too long: \d+ bytes of UTF-8, at most 248"):
            call()
    assert repo.list_branches() == {"main"}
    assert repo.list_tags() == set()


def test_name_that_is_not_unicode_is_invalid(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(icd.InvalidInputError, match="not valid Unicode"):
        repo.create_branch("a\udc80b", repo.lookup_branch("main"))
    assert repo.list_branches() == {"main"}


def test_cli_refuses_a_too_long_branch_as_bad_input(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # `ingest --branch` creates the branch: a name no retry could store said "worth
    # retrying" (exit 4); it is bad input (exit 2) and nothing is written
    pytest.importorskip("h5netcdf")
    from netcdf_data import write_files

    from icechunk_dist.cli import main

    src, path = tmp_path / "src", tmp_path / "repo"
    write_files(src, 1)
    code = main(["ingest", str(path), str(src), "--no-progress", "--branch", "b" * 249])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "at most 248" in err
    repo = icd.Repository.open(icd.local_filesystem_storage(path))
    assert repo.list_branches() == {"main"}


ODD = ["a%b", "a%25b", "a#1", "a b", "a?b*", "x~[]{}^`|<>\"", "a+b=c&d", "ÿ", "é" * 124,
       "😀" * 62, "b" * 248]


def test_odd_and_longest_names_round_trip_on_s3(make_s3_storage: Callable[..., Storage]) -> None:
    # characters an object store URL-encodes, and the longest names, under a prefix
    repo = icd.Repository.create(make_s3_storage("some/prefix/repo"))
    sid = repo.lookup_branch("main")
    for name in ODD:
        repo.create_branch(name, sid)
        repo.create_tag(name, sid)
    assert repo.list_branches() == {"main", *ODD}
    assert repo.list_tags() == set(ODD)
    for name in ODD:
        assert repo.lookup_branch(name) == sid
        assert repo.lookup_tag(name) == sid
        repo.delete_branch(name)
    assert repo.list_branches() == {"main"}
    # S3 could hold a longer name, but a repository must move between backends: the
    # limit is the same everywhere
    with pytest.raises(icd.InvalidInputError, match="at most 248"):
        repo.create_branch("b" * 249, sid)


def test_odd_names_round_trip_on_local_disk(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    sid = repo.lookup_branch("main")
    for name in ODD:
        repo.create_branch(name, sid)
        repo.create_tag(name, sid)
    assert repo.list_branches() == {"main", *ODD}
    assert repo.list_tags() == set(ODD)
    assert {repo.lookup_branch(n) for n in ODD} == {repo.lookup_tag(n) for n in ODD} == {sid}
    with pytest.raises(icd.InvalidInputError, match="at most 248"):
        repo.create_tag("é" * 124 + "a", sid)
