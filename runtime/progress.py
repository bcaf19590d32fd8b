"""The one progress counter: long work (preprocessing, synthesis, calibration, evaluation) says how far it is.

On a terminal it rewrites one line; in a log file (CI, a scheduled job) it prints a line every ~10%,
so a log never fills with carriage returns nor stays silent for minutes.
"""

from __future__ import annotations

import sys
import time
from typing import Callable


class Progress:
    def __init__(self, total: int, title: str, enabled: bool = True) -> None:
        self.total, self.title, self.enabled = total, title, enabled
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self._next_report = 0
        self._closed = False

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled or self.total == 0:
            return
        text = f"{self.title}: {done}/{self.total}{note}"
        if self.tty:
            if done == self.total or done % max(1, self.total // 100) == 0:
                print(f"\r{text}", end="", file=sys.stderr, flush=True)
        elif done >= self._next_report or done == self.total:
            print(text, file=sys.stderr, flush=True)
            self._next_report = done + max(1, self.total // 10)

    def close(self) -> float:
        """Print the closing line (once) and return the elapsed seconds."""
        elapsed = time.perf_counter() - self.start
        if self.enabled and self.total and not self._closed:
            end = "\n" if self.tty else ""
            print(f"{end}{self.title}: {self.total} done in {elapsed:.1f} s", file=sys.stderr, flush=True)
        self._closed = True
        return elapsed


def terminal_progress(title: str) -> Callable[[int, int], None] | None:
    """A `(done, total)` callback for the runtime's APIs, only when a person watches stderr.

    Runtime commands are often piped into other tools (`--json`), where progress lines are noise.
    """
    if not sys.stderr.isatty():
        return None
    meters: dict[int, Progress] = {}

    def report(done: int, total: int) -> None:
        meter = meters.setdefault(total, Progress(total, title))
        meter.update(done)
        if done >= total:
            meter.close()

    return report
