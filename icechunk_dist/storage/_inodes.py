"""Spare inodes for small local writes: the file creation a commit waits on, done ahead.

On Linux a file system allocates an inode when a file is created, and that is most of what a
small write costs: on the ext4 disk we measure, a create takes 300 to 700 µs under a stream
of writes, while writing 1 KiB into a file that exists and linking it under its name take
about 40 µs together. A commit creates four objects one after the other (manifest,
transaction log, snapshot, branch version), so its latency on local disk is mostly inode
allocation. ``O_TMPFILE`` separates the two: it makes an unnamed inode on the file system of
a directory, and ``linkat`` gives it a name later, failing if the name exists (the create
semantics the protocol needs).

This module keeps a few such unnamed files open per storage root, made by one background
thread after a write took one, so that the writes a commit waits on only write and link
(``docs/design/016-spare-inodes.md``). They are invisible: an unnamed inode is no file in any
directory, nothing lists or collects it, and the kernel frees it when its descriptor is
closed, including when the process is killed. Where ``O_TMPFILE`` or ``/proc/self/fd`` is not
available (other systems, some network file systems) nothing is kept and writes create
their files as before.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import threading
import time

__all__ = ["SPARES_PER_ROOT", "link_spare", "take_spare"]

SPARES_PER_ROOT = 8  # two commits' worth of objects
_MAX_ROOTS = 4  # roots with spares at once (least recently written evicted): at most 32 fds
_SETTLE = 0.005  # seconds without a take before refilling (not while a commit is writing)
_TMPFILE = getattr(os, "O_TMPFILE", 0)

_lock = threading.Lock()
_spares: collections.OrderedDict[str, collections.deque[int]] = collections.OrderedDict()
_unsupported: set[str] = set()
_wanted = threading.Event()
_thread: threading.Thread | None = None
_proc_fd: tuple[int, int] | None = None  # (pid, descriptor of /proc/self/fd)


def _reset_after_fork() -> None:
    """A child must never write into its parent's spare inodes (both would link the same
    one): it closes its copies of the descriptors and starts with none."""
    global _lock, _spares, _wanted, _thread, _proc_fd
    for fds in _spares.values():
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    if _proc_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_proc_fd[1])
    _lock = threading.Lock()
    _spares = collections.OrderedDict()
    _wanted = threading.Event()
    _thread = None
    _proc_fd = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def take_spare(root: str) -> int | None:
    """An open descriptor of an unnamed, empty file on ``root``'s file system, or None (none
    made yet, or not supported there). The caller owns it: it writes, then
    :func:`link_spare` or closes it. Asks the background thread for a replacement."""
    global _thread
    if not _TMPFILE or root in _unsupported:
        return None
    with _lock:
        fds = _spares.get(root)
        if fds is None:
            fds = _spares[root] = collections.deque()
            while len(_spares) > _MAX_ROOTS:
                _, old = _spares.popitem(last=False)
                for fd in old:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        else:
            _spares.move_to_end(root)
        spare = fds.popleft() if fds else None
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_refill_forever, name="icechunk_dist-inodes",
                                       daemon=True)
            _thread.start()
    _wanted.set()
    return spare


def link_spare(fd: int, path: str) -> None:
    """Give the unnamed file ``fd`` the name ``path`` (``linkat`` through ``/proc/self/fd``):
    FileExistsError if ``path`` exists, FileNotFoundError if its directory does not. The
    caller still closes ``fd``."""
    os.link(str(fd), path, src_dir_fd=_proc_fd_dir())


def _proc_fd_dir() -> int:
    """This process's ``/proc/self/fd`` directory, opened once per process (a descriptor
    opened before a fork names the parent's descriptors)."""
    global _proc_fd
    pid = os.getpid()
    held = _proc_fd
    if held is None or held[0] != pid:
        with _lock:
            held = _proc_fd
            if held is None or held[0] != pid:
                held = _proc_fd = (pid, os.open("/proc/self/fd",
                                                os.O_RDONLY | os.O_DIRECTORY))
    return held[1]


def _refill_forever() -> None:
    while True:
        _wanted.wait()
        # wait for the writes in progress to end: a create now would queue in the file
        # system's journal behind (or ahead of) the links the writer is about to make
        while _wanted.is_set():
            _wanted.clear()
            time.sleep(_SETTLE)
        with _lock:
            roots = [r for r, fds in _spares.items() if len(fds) < SPARES_PER_ROOT]
        for root in roots:
            _refill(root)


def _give_up(root: str) -> None:
    with _lock:
        _unsupported.add(root)
        for fd in _spares.pop(root, ()):
            with contextlib.suppress(OSError):
                os.close(fd)


def _refill(root: str) -> None:
    while True:
        with _lock:
            fds = _spares.get(root)
            if fds is None or len(fds) >= SPARES_PER_ROOT:
                return
        try:
            _proc_fd_dir()
        except OSError:  # no /proc: unnamed files cannot be linked
            _give_up(root)
            return
        try:
            fd = os.open(root, os.O_WRONLY | _TMPFILE, 0o644)
        except FileNotFoundError:  # the root was removed: nothing to keep for it
            with _lock:
                _spares.pop(root, None)
            return
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTDIR):
                _give_up(root)  # not on this file system (or kernel): writes create files
            return  # out of descriptors, space, permission: try again after the next take
        with _lock:
            fds = _spares.get(root)
            if fds is not None and len(fds) < SPARES_PER_ROOT:
                fds.append(fd)
                continue
        os.close(fd)
        return
