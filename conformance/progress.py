"""A one-line progress bar on a terminal (a line per 10% when the stream is not a terminal)."""

from __future__ import annotations

import time
from typing import TextIO


class ProgressBar:
    """``update(done, total, label)`` redraws; ``close()`` ends the line."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.last_decile = -1

    def update(self, done: int, total: int, label: str) -> None:
        frac = done / total if total else 1.0
        filled = int(self.width * frac)
        elapsed = time.perf_counter() - self.t0
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {elapsed:5.1f}s {label}"
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
            self.stream.flush()
        elif int(frac * 10) != self.last_decile:
            self.last_decile = int(frac * 10)
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
