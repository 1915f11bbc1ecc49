"""Terminal progress bars for the fits that train (bridge.progress reports their loops).

A bar shows the method, its steps (or epochs' steps) done and to go, their rate and the best validation
accuracy so far (mean over the seeds trained together). Bars appear only on a terminal (stderr a TTY) and
not with --no-progress; under `bench` they sit below the bench's own bar and vanish when their fit ends.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from clipbridge.bridge.progress import listening


class TrainingBar:
    """A bridge.progress listener drawing one tqdm bar per training loop."""

    def __init__(self, desc: str, *, position: int = 0, leave: bool = True) -> None:
        self.desc, self.position, self.leave = desc, position, leave
        self._bar = None

    def begin(self, total: int, unit: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=self.desc, unit=unit, position=self.position, leave=self.leave,
                         dynamic_ncols=True, mininterval=0.2)

    def advance(self, steps: int, best: float | None) -> None:
        if self._bar is None:
            return
        if best is not None:
            self._bar.set_postfix_str(f"best val {best:.2f}%", refresh=False)
        self._bar.update(steps)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def on_terminal() -> bool:
    """Whether stderr, where the bars go, is a terminal."""
    return sys.stderr.isatty()


def wants_bars(enabled: bool) -> bool:
    """Bars are drawn when asked for and stderr is a terminal."""
    return enabled and on_terminal()


@contextmanager
def training_progress(desc: str, enabled: bool, *, position: int = 0, leave: bool = True) -> Iterator[None]:
    """Draw the training bars of fits run inside the block (see module docstring)."""
    with listening(TrainingBar(desc, position=position, leave=leave) if wants_bars(enabled) else None):
        yield
