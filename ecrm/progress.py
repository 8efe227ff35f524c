"""The progress bar of `ecrm import`: share of the file read, rows, rows/s and time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 28


class Progress:
    """Redraws one line on a terminal at most every `interval` seconds; silent elsewhere."""

    def __init__(
        self,
        total_bytes: int,
        position: Callable[[], int],
        *,
        stream: TextIO = sys.stderr,
        enabled: bool | None = None,
        interval: float = 0.25,
    ) -> None:
        self.total = max(total_bytes, 1)
        self.position = position
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.interval = interval
        self.started = time.monotonic()
        self._next = self.started + interval

    def tick(self, rows: int) -> None:
        if not self.enabled or rows & 1023:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._draw(rows, now)

    def done(self, rows: int) -> None:
        if self.enabled:
            self._draw(rows, time.monotonic(), final=True)

    def _draw(self, rows: int, now: float, final: bool = False) -> None:
        share = 1.0 if final else min(self.position() / self.total, 1.0)
        elapsed = max(now - self.started, 1e-6)
        rate = rows / elapsed
        left = elapsed * (1 - share) / share if share > 0 else 0.0
        filled = int(WIDTH * share)
        bar = "#" * filled + "." * (WIDTH - filled)
        line = (
            f"\r[{bar}] {share:4.0%}  {rows:,} rows  {rate:,.0f} rows/s  "
            f"{'done in ' + _clock(elapsed) if final else 'ETA ' + _clock(left)}   "
        )
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
