"""Progress on the terminal: a tqdm bar when tqdm is installed, else a plain counter line;
nothing when stderr is not a terminal (unless forced). The time left is the suite's estimate
(eta.py), given with each unit done: tqdm's own (units left at the pace so far) is not shown,
since the units differ in cost by orders of magnitude."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

from .eta import format_left


class Progress:
    """What the suite reports to; this base shows nothing."""

    def start(self, total: int) -> None:
        """``total`` units (groups) to come."""

    def now(self, label: str) -> None:
        """What is being measured now."""

    def advance(self, label: str, left: Optional[float] = None) -> None:
        """One unit done: ``label``; ``left``: the estimated seconds to the end (None:
        unknown)."""

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

    def advance(self, label: str, left: Optional[float] = None) -> None:
        self.done += 1
        eta = format_left(left)
        text = (f"[{self.done}/{self.total}] {label} "
                f"({time.perf_counter() - self.t0:.0f} s{', ' + eta if eta else ''})")
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
    # tqdm's {remaining} and {rate} assume units of equal cost: left out
    FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} groups [{elapsed}{postfix}]"

    def __init__(self, tqdm: Any, stream: TextIO):
        self.tqdm, self.stream, self.bar = tqdm, stream, None
        self.eta = ""

    def start(self, total: int) -> None:
        self.bar = self.tqdm(total=total, file=self.stream, leave=False, dynamic_ncols=True,
                             bar_format=self.FORMAT)

    def now(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.eta}; {label}" if self.eta else label)

    def advance(self, label: str, left: Optional[float] = None) -> None:
        self.eta = format_left(left)
        if self.bar is not None:
            self.bar.set_postfix_str(self.eta, refresh=False)
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
