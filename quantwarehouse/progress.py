"""Progress for long commands: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports `done / total` for one step, with the time left estimated from the pace so far."""

    def __init__(
        self, step: str, total: int, *, stream: TextIO | None = None, quiet: bool = False
    ) -> None:
        self.step = step
        self.total = total
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.started = time.perf_counter()
        self.is_terminal = self.stream.isatty()
        self._last_line_at = 0.0

    def eta_seconds(self, done: int) -> float | None:
        if done == 0:
            return None
        elapsed = time.perf_counter() - self.started
        return elapsed / done * (self.total - done)

    def update(self, done: int, label: str = "", *, eta: float | None = None) -> None:
        """Show `done / total`; `eta` (seconds left) replaces the estimate from the pace so far
        when the caller knows better (e.g. from earlier runs)."""
        if self.quiet or self.total == 0:
            return
        eta = eta if eta is not None else self.eta_seconds(done)
        eta_text = f", ~{eta:.0f}s left" if eta is not None and done < self.total else ""
        if self.is_terminal:
            width = 30
            filled = int(width * done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(
                f"\r{self.step} [{bar}] {done}/{self.total}{eta_text} {label[:40]:<40}"
            )
            if done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
            return
        now = time.perf_counter()
        if done >= self.total or now - self._last_line_at >= 2.0 or done == 1:
            self._last_line_at = now
            self.stream.write(f"{self.step}: {done}/{self.total} {label}{eta_text}\n")
            self.stream.flush()
