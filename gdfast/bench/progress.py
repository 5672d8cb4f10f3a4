"""Progress on the terminal: a tqdm bar when tqdm is installed, else a plain counter line;
nothing when stderr is not a terminal (unless forced)."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO


class Progress:
    """What the suite reports to; this base shows nothing."""

    def start(self, total: int) -> None:
        """``total`` units (groups) to come."""

    def now(self, label: str) -> None:
        """What is being measured now."""

    def advance(self, label: str) -> None:
        """One unit done: ``label``."""

    def close(self) -> None:
        """The run is over."""


class Silent(Progress):
    pass


class Plain(Progress):
    def __init__(self, stream: TextIO, tty: bool):
        self.stream, self.tty = stream, tty
        self.total, self.done, self.t0 = 0, 0, time.perf_counter()

    def start(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def advance(self, label: str) -> None:
        self.done += 1
        text = (f"[{self.done}/{self.total}] {label} "
                f"({time.perf_counter() - self.t0:.0f} s)")
        if self.tty:
            self.stream.write("\r" + text.ljust(60))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()


class Bar(Progress):
    def __init__(self, tqdm: Any, stream: TextIO):
        self.tqdm, self.stream, self.bar = tqdm, stream, None

    def start(self, total: int) -> None:
        self.bar = self.tqdm(total=total, file=self.stream, unit="group", leave=False,
                             dynamic_ncols=True)

    def now(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label)

    def advance(self, label: str) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def make(mode: str = "auto", stream: Optional[TextIO] = None) -> Progress:
    """mode: "auto" (bar on a terminal, else nothing), "bar", "plain", "none"."""
    stream = stream or sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if mode == "none" or (mode == "auto" and not tty):
        return Silent()
    if mode in ("auto", "bar"):
        try:
            from tqdm import tqdm
        except ImportError:
            return Plain(stream, tty)
        return Bar(tqdm, stream)
    return Plain(stream, tty)
