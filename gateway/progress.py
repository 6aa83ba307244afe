"""Progress of a long command (`edgemart seed`): rows done, rate and time left.

On a terminal one line is rewritten in place after every step; anywhere else (a pipe, a log
file) a plain line is written each time another tenth of the work is done, so a log gets at
most ten lines whatever the size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def progress_line(label: str, done: int, total: int, elapsed_s: float) -> str:
    percent = 100 * done // total if total else 100
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    line = f"{label}: {done:,} / {total:,} ({percent}%), {rate:,.0f} rows/s"
    if done >= total:
        return f"{line}, done in {duration(elapsed_s)}"
    if rate <= 0:
        return line
    return f"{line}, ETA {duration((total - done) / rate)}"


def duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressReporter:
    """A `(done, total)` callback writing progress lines to `stream`."""

    def __init__(
        self, stream: TextIO, label: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.label = label
        self.clock = clock
        self.started = clock()
        self.rewrite = stream.isatty()
        self._next_tenth = 1

    def __call__(self, done: int, total: int) -> None:
        line = progress_line(self.label, done, total, self.clock() - self.started)
        if self.rewrite:
            # \r back to the line's start, \x1b[K clears what a longer previous line left.
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if done >= total else ""))
        else:
            tenth = 10 * done // total if total else 10
            if tenth < self._next_tenth:
                return
            self._next_tenth = tenth + 1
            self.stream.write(line + "\n")
        self.stream.flush()
