"""Progress of an optimisation loop that suits both a terminal and a log file.

``progress(iterations, desc, enabled)`` is a drop-in for ``tqdm(range(iterations), desc=desc,
disable=not enabled, leave=False)``: iterate over it and call ``set_postfix(loss=...)``. On a
terminal (stderr is a TTY) it is a tqdm bar. Otherwise it writes one line when the loop ends (and
one every ``every`` seconds while it runs) with the iterations done, the last loss and the time, so
a log file gets a few lines per level instead of one per update.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

LOG_EVERY_S = 30.0


class LogProgress:
    """Iterate over ``range(total)``, logging to ``stream`` at the end and every ``every`` seconds."""

    def __init__(self, total: int, desc: str, stream: TextIO, every: float = LOG_EVERY_S):
        self.total, self.desc, self.stream, self.every = total, desc, stream, every
        self.done = 0
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, **values: Any) -> None:
        """Values shown on the next line (as tqdm's ``set_postfix``)."""
        self.postfix = values

    def _line(self, seconds: float) -> None:
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        self.stream.write(f"{self.desc}: {self.done}/{self.total} iterations{extra}, {seconds:.1f} s\n")
        self.stream.flush()

    def __iter__(self) -> Iterator[int]:
        start = last = time.perf_counter()
        try:
            for i in range(self.total):
                self.done = i + 1
                yield i
                now = time.perf_counter()
                if now - last >= self.every and self.done < self.total:
                    self._line(now - start)
                    last = now
        finally:
            self._line(time.perf_counter() - start)


class _Silent:
    def __init__(self, total: int):
        self.total = total

    def set_postfix(self, **values: Any) -> None:
        pass

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.total))


def progress(iterations: int, desc: str, enabled: bool = True, stream: TextIO | None = None) -> Iterable[int]:
    """``range(iterations)`` with progress on ``stream`` (default stderr): a tqdm bar on a terminal,
    a line at the end (and every :data:`LOG_EVERY_S` s) elsewhere, nothing when not ``enabled``."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return _Silent(iterations)
    if stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(range(iterations), desc=desc, leave=False, file=stream)
    return LogProgress(iterations, desc, stream)
