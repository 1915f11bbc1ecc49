"""How many CPU threads torch uses: `--threads N` (any command), else $CLIPBRIDGE_THREADS, else a default that
leaves room for what else runs on the machine.

torch starts one thread per core. On a machine another process keeps busy, those threads wait on each other:
FIGURES.md ("First day") measured `fit --trained` on the demo cache 3× slower with 2 threads than with 1 on a
2-core machine with one busy process, and no faster with 2 than with 1 on the idle machine. The default is
therefore the CPUs this process may use minus the machine's current load (1-minute load average, rounded),
at least 1: every core on an idle machine, one thread fewer per busy process.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Callable, Sequence, TypeVar

from clipbridge.bridge.errors import BridgeInputError

ENV = "CLIPBRIDGE_THREADS"
T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, else the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                     # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cpus: int | None = None, load: float | None = None) -> int:
    """max(1, cpus - round(load)): the cores the rest of the machine leaves free."""
    cpus = available_cpus() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cpus, cpus - int(round(load))))


def parse_threads(value: str | int | None, where: str = "--threads") -> int | None:
    """A positive thread count or 'all' (every available CPU); None stays None. One-line error otherwise."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text == "all":
        return available_cpus()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise BridgeInputError(f"{where} {value!r}: give a positive number of threads or 'all'")
    return count


def resolve_threads(option: str | int | None = None, environ: dict | None = None) -> tuple[int, str]:
    """(threads, where the number came from: '--threads', '$CLIPBRIDGE_THREADS' or 'default')."""
    environ = os.environ if environ is None else environ
    chosen = parse_threads(option)
    if chosen is not None:
        return chosen, "--threads"
    chosen = parse_threads(environ.get(ENV), f"${ENV}")
    if chosen is not None:
        return chosen, f"${ENV}"
    return default_threads(), "default"


def apply_threads(option: str | int | None = None) -> int:
    """Set torch's intra-op threads as resolve_threads() says; returns the number set."""
    import torch

    threads, _ = resolve_threads(option)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@contextmanager
def single_thread():
    """Run the block on one torch thread, then restore the count. For dense linear algebra made of hundreds of
    small parallel steps (an eigendecomposition of a few hundred rows): on a busy CPU every step's barrier waits
    for a descheduled thread (FIGURES.md, "Scale (issue 21)": GDA's 512 × 512 pinv took 0.07 s on one thread and
    0.1-20 s on two of the shared 2-core VM right after other parallel work), and one thread also makes the
    result independent of the thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def map_single_threaded(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """[fn(item) for item in items], run on up to `workers` Python threads (default: torch's thread count), each
    item's torch work on one thread (single_thread). For independent pieces of work made of many small tensor
    operations (one seed's pruned validation search): the pieces run side by side instead of every small
    operation waiting on a parallel barrier, and each piece computes exactly what it computes alone on one
    thread, whatever the number of workers or pieces. Results in the order of `items`."""
    import torch

    items = list(items)
    workers = min(torch.get_num_threads() if workers is None else workers, len(items))
    with single_thread():
        if workers <= 1:
            return [fn(item) for item in items]
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        modes = _function_modes()

        def run(item: T) -> R:              # autograd and torch function modes are per thread: the caller's
            with torch.inference_mode(inference), torch.set_grad_enabled(grad), ExitStack() as stack:
                for mode in modes:
                    stack.enter_context(mode)
                return fn(item)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(run, items))


def _function_modes() -> list:
    """The calling thread's torch function modes, outermost first (bridge.precision's reduced-precision products,
    for one): a worker thread starts without them and must enter them itself."""
    from torch.overrides import _get_current_function_mode_stack

    return list(_get_current_function_mode_stack())
