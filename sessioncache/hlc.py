"""Hybrid logical clock: per-field stamps that order writes across hosts with skewed clocks."""

from __future__ import annotations

import os
import threading
import time

_WIDTH_MS = 13
_WIDTH_COUNT = 6


class HybridClock:
    """Stamps as fixed-width strings ``<ms>.<counter>.<node>``: string order is causal order.

    ``now()`` never goes backwards and moves past every stamp it has ``observe()``d, so a host
    whose wall clock lags still stamps after what it has seen (Kulkarni et al., 2014).
    """

    def __init__(self, node: str | None = None) -> None:
        self.node = node or f"{os.getpid():x}{os.urandom(3).hex()}"
        self._ms = 0
        self._count = 0
        self._lock = threading.Lock()

    def now(self) -> str:
        """A fresh stamp, later than every stamp issued or observed here."""
        wall = int(time.time() * 1000)
        with self._lock:
            if wall > self._ms:
                self._ms, self._count = wall, 0
            else:
                self._count += 1
            return self._format(self._ms, self._count)

    def observe(self, stamp: str) -> None:
        """Move past a stamp seen from another host."""
        try:
            ms_s, count_s, _ = stamp.split(".", 2)
            ms, count = int(ms_s), int(count_s)
        except ValueError:
            return
        with self._lock:
            if (ms, count) > (self._ms, self._count):
                self._ms, self._count = ms, count

    def _format(self, ms: int, count: int) -> str:
        return f"{ms:0{_WIDTH_MS}d}.{count:0{_WIDTH_COUNT}d}.{self.node}"
