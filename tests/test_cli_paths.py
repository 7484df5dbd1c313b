"""The CLI on bad repository paths (scenario 10): a regular file, a path under a file, a
directory that holds something else (e.g. a folder named ``repo``, where the repository
marker must go). Each gives one clear error line with exit code 2 and creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import icechunk_dist as icd
from icechunk_dist.cli import main


def tree(root: Path) -> list[tuple[str, str, int]]:
    """Everything under ``root``: (relative path, kind, size)."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            out.append((os.path.relpath(os.path.join(dirpath, name), root), "dir", 0))
        for name in files:
            p = os.path.join(dirpath, name)
            out.append((os.path.relpath(p, root), "file", os.path.getsize(p)))
    return sorted(out)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("icechunk-dist: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A regular file ``FILE``, a source file, a directory ``d`` holding only a folder
    ``repo``, and a directory ``other`` holding an unrelated file."""
    (tmp_path / "FILE").write_text("not a repository\n")
    (tmp_path / "src.nc").write_bytes(b"CDF\x01 not really")
    (tmp_path / "d" / "repo").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine\n")
    return tmp_path


@pytest.mark.parametrize("argv", [
    ["init", "FILE"],
    ["init", "FILE/sub"],
    ["ingest", "FILE", "src.nc", "--no-progress"],
    ["ingest", "FILE/sub", "src.nc", "--no-progress"],
    ["ingest", "FILE", "--synthetic", "4", "--chunks", "2", "--no-progress"],
])
def test_a_file_where_the_repository_directory_must_be(
        place: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(place)
    before = tree(place)
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "FILE" in line and "is a file, not a directory" in line
    assert tree(place) == before


@pytest.mark.parametrize("command", ["log", "branches", "tags", "gc", "expire"])
def test_reading_commands_on_a_file(place: Path, command: str,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(place)
    before = tree(place)
    argv = [command, "FILE"] + (["--older-than-days", "1"] if command == "expire" else [])
    assert main(argv) == 2
    assert "is a file, not a directory" in one_error_line(capsys)
    assert tree(place) == before


def test_a_folder_named_repo_is_not_a_repository(place: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``init`` used to say "a repository already exists" (and leave a snapshot behind)
    while ``log`` said "no repository"; now both agree there is none, and init refuses."""
    monkeypatch.chdir(place)
    before = tree(place)
    assert main(["init", "d"]) == 2
    line = one_error_line(capsys)
    assert "already exists" not in line and "not empty and holds no repository" in line
    assert main(["log", "d"]) == 2
    assert "no repository" in one_error_line(capsys)
    assert main(["ingest", "d", "src.nc", "--no-progress"]) == 2
    assert "not empty and holds no repository" in one_error_line(capsys)
    assert tree(place) == before


def test_init_refuses_a_directory_that_holds_other_files(
        place: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(place)
    before = tree(place)
    assert main(["init", "other"]) == 2
    assert "not empty" in one_error_line(capsys)
    assert tree(place) == before
    # an empty directory, or a missing one, is where a repository goes
    (place / "empty").mkdir()
    assert main(["init", "empty"]) == 0
    assert main(["init", "new/deeper"]) == 0
    assert icd.Repository.exists(icd.local_filesystem_storage(place / "empty"))
    assert icd.Repository.exists(icd.local_filesystem_storage(place / "new" / "deeper"))
    # a second init is the documented "already exists" (exit 1), and changes nothing
    capsys.readouterr()
    again = tree(place)
    assert main(["init", "empty"]) == 1
    assert "a repository already exists" in one_error_line(capsys)
    assert tree(place) == again


def test_the_installed_program_prints_no_traceback(place: Path) -> None:
    for argv in (["init", "FILE"], ["ingest", "FILE", "src.nc", "--no-progress"],
                 ["init", "d"]):
        done = subprocess.run([sys.executable, "-m", "icechunk_dist.cli", *argv], cwd=place,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("icechunk-dist: error: "), done.stderr
    assert sorted(p.name for p in place.iterdir()) == ["FILE", "d", "other", "src.nc"]
    assert [p.name for p in (place / "d").iterdir()] == ["repo"]
