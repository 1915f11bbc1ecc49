"""Progress of a fit's long loops, told to whoever listens: the pure-tensor core prints nothing itself.

A training loop opens `progress(total, unit)` and calls `advance(n, best=...)` as it goes; `best` is the
[S] tensor of best validation accuracies so far (percent) where the loop selects on validation, shown as its
mean over the seeds trained together (read only when someone listens: no device sync otherwise). Nobody
listens by default, so the loops cost nothing extra; `evaluate.fitting.progress` installs a terminal bar for the
`fit`/`bench` commands with `listening(...)`. The listener is a context variable, so a thread or task that
did not install one stays quiet.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Iterator, Protocol

if TYPE_CHECKING:
    from torch import Tensor


class Listener(Protocol):
    """Receives a loop's progress: `begin` once, `advance` with steps done since the last call, `end` once."""

    def begin(self, total: int, unit: str) -> None: ...

    def advance(self, steps: int, best: float | None) -> None: ...

    def end(self) -> None: ...


_LISTENER: ContextVar[Listener | None] = ContextVar("clipbridge_progress_listener", default=None)


@contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send the progress of loops run inside the block to `listener` (None: to nobody)."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


class Progress:
    """One loop's reporter; `advance` is a no-op when nobody listens."""

    def __init__(self, listener: Listener | None) -> None:
        self._listener = listener

    def advance(self, steps: int = 1, best: Tensor | None = None) -> None:
        if self._listener is not None:
            self._listener.advance(steps, None if best is None else float(best.float().mean()))


@contextmanager
def progress(total: int, unit: str = "step") -> Iterator[Progress]:
    """Report a loop of `total` `unit`s (e.g. optimisation steps, L-BFGS iterations) to the current listener."""
    listener = _LISTENER.get()
    if listener is not None:
        listener.begin(total, unit)
    try:
        yield Progress(listener)
    finally:
        if listener is not None:
            listener.end()
