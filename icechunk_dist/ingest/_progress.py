"""Progress of an ingestion on stderr (opt-in): files and bytes done, rate and ETA.

The library prints nothing unless asked (``progress=True``); its messages go to
``logging.getLogger("icechunk_dist.ingest")``. On a terminal the display is one line
rewritten in place; otherwise (a log file, a CI job) a line every tenth of the way or every
ten seconds, and one at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

__all__ = ["Progress", "log", "size"]

log = logging.getLogger("icechunk_dist.ingest")

_PREFIX = "icechunk-dist ingest: "


def size(nbytes: float) -> str:
    """``12.3 MB`` (decimal units, as rates are usually given)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """One phase at a time (``start``, ``advance``..., ``finish``); does nothing if not
    enabled."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream
        self._what = ""
        self._files = self._nbytes = 0
        self._done_files = self._done_bytes = 0
        self._t0 = self._last_draw = 0.0
        self._last_step = 0
        self._tty = False
        self._open_line = False

    def start(self, what: str, files: int, nbytes: int = 0) -> None:
        """Begin a phase of ``files`` files holding ``nbytes`` bytes (0: files only)."""
        self._what, self._files, self._nbytes = what, files, nbytes
        self._done_files = self._done_bytes = self._last_step = 0
        self._t0 = self._last_draw = time.perf_counter()
        if not self.enabled:
            return
        stream = self._out()
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        if self._tty:
            self._draw()

    def advance(self, files: int, nbytes: int = 0) -> None:
        """``files`` more files (``nbytes`` more bytes) are done."""
        self._done_files += files
        self._done_bytes += nbytes
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw >= 0.2 or self._done_files >= self._files:
                self._draw()
            return
        step = self._done_files * 10 // max(1, self._files)
        if self._done_files >= self._files or step > self._last_step or (
                now - self._last_draw >= 10):
            self._last_step = step
            self._draw()

    def finish(self) -> None:
        """End the phase (on a terminal: end its line)."""
        if self.enabled and self._tty and self._open_line:
            self._out().write("\n")
            self._out().flush()
        self._open_line = False

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def line(self) -> str:
        """The phase's state as one line."""
        text = f"{_PREFIX}{self._what} {self._done_files}/{self._files} files"
        if not self._nbytes:
            return text
        elapsed = time.perf_counter() - self._t0
        text += f", {size(self._done_bytes)}/{size(self._nbytes)}"
        if self._done_bytes and elapsed > 0:
            rate = self._done_bytes / elapsed
            text += f", {size(rate)}/s"
            if self._done_bytes < self._nbytes:
                text += f", ETA {_duration((self._nbytes - self._done_bytes) / rate)}"
        return text

    def _draw(self) -> None:
        self._last_draw = time.perf_counter()
        out = self._out()
        if self._tty:
            out.write("\r\x1b[2K" + self.line())
            self._open_line = True
        else:
            out.write(self.line() + "\n")
        out.flush()
