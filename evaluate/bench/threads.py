"""Wall time of the demo, a bench and SeMoBridge-T at 1, 2 and all threads, on the machine as it is and with
busy processes added: the table behind the default thread count (bridge/threads.py; FIGURES.md, "First day").

    python -m clipbridge.evaluate.bench.threads                 # quick workloads, as-is and + 1 busy process
    python -m clipbridge.evaluate.bench.threads --full --busy 0,1,2 --timeout 900

Each cell is one `clipbridge` command in a fresh process (`--threads N`, model loading and start-up included,
as a user waits for it), in a temporary folder:

- demo: `demo --quick` (its own extraction of the reduced `shapes` set, then the 6-method bench; `--full`: the
  whole `make demo` workload);
- bench: `bench` of zeroshot, linear-probe, cmm and semobridge (paper recipes; plain views, which the
  extracted demo cache holds) over shots 1,4 x seeds 1-2 on the demo cache (`--full`: shots 1,4,16 x seeds
  1-3);
- semobridge-t: `fit --trained --shots 4 --seeds 1` on the demo cache, 1,000 training steps (`--full`: the
  recipe's 5,000, the run issue 20 timed).

"busy B" adds B processes that spin on the CPU for the whole cell (the loaded machine); "busy 0" is the
machine as it is. The 1-minute load average before each cell is printed with it: "busy 0" is an idle machine
only when that load is near 0. A cell that passes `--timeout` is stopped and shown as "> T s".
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from clipbridge.bridge.threads import available_cpus

MODEL = ("--model", "clipbridge-tiny")


def workloads(full: bool) -> dict[str, list[str]]:
    """{name: clipbridge arguments}; run inside a folder holding the demo cache under cache/."""
    shots, seeds = ("1,4,16", "1-3") if full else ("1,4", "1-2")
    steps = [] if full else ["--hparam", "steps=1000"]
    return {
        "demo": ["demo", "--out", "demo"] + ([] if full else ["--quick"]),
        "bench": ["bench", "--dataset", "shapes", *MODEL, "--methods", "zeroshot,linear-probe,cmm,semobridge",
                  "--shots", shots, "--seeds", seeds, "--results", "results", "--no-progress"],
        "semobridge-t": ["fit", "--dataset", "shapes", *MODEL, "--trained", "--shots", "4", "--seeds", "1",
                         "--no-progress", *steps],
    }


def thread_counts() -> list[str]:
    """1, 2 and all (every CPU this process may use), without repeats."""
    counts = ["1", "2"] if available_cpus() >= 2 else ["1"]
    return counts + ["all"] if available_cpus() > 2 else counts


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy(processes: int) -> Iterator[None]:
    """`processes` CPU-bound processes running for the duration (the loaded machine)."""
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()


def clipbridge(args: list[str], folder: Path, threads: str, timeout: float) -> float | None:
    """Wall seconds of `clipbridge ARGS --threads THREADS` run in `folder`; None past `timeout`."""
    command = [sys.executable, "-m", "clipbridge.cli", *args, "--threads", threads]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(args[:1])} --threads {threads} failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def prepare(folder: Path) -> None:
    """The demo cache (shapes, clipbridge-tiny) under folder/cache/, extracted once with every thread."""
    command = [sys.executable, "-m", "clipbridge.cli", "extract", "--dataset", "shapes", *MODEL, "--threads", "all"]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: extracting the demo cache failed: {done.stderr.strip()[-500:]}")


def fresh(folder: Path) -> Path:
    """A working folder holding only the shared cache (each cell starts without outputs or runs)."""
    work = Path(tempfile.mkdtemp(dir=folder))
    (work / "cache").symlink_to(folder / "cache")
    return work


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clipbridge.evaluate.bench.threads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full demo, bench and SeMoBridge-T workloads")
    parser.add_argument("--busy", default="0,1", help="busy processes added, comma-separated (default 0,1)")
    parser.add_argument("--workloads", default="demo,bench,semobridge-t", help="which rows (comma-separated)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a cell is stopped")
    args = parser.parse_args(argv)
    jobs = workloads(args.full)
    chosen = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in jobs]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(jobs)}")
    counts = thread_counts()
    header = ["workload", "machine", *(f"{c} thread{'s' if c != '1' else ''}" for c in counts)]
    print(f"{available_cpus()} CPUs; {'full' if args.full else 'quick'} workloads; wall seconds per command")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with tempfile.TemporaryDirectory(prefix="clipbridge-threads-") as root:
        root_path = Path(root)
        prepare(root_path)
        for name in chosen:
            for extra in (int(b) for b in args.busy.split(",")):
                cells, loads = [], []
                with busy(extra):
                    for threads in counts:
                        loads.append(os.getloadavg()[0])
                        seconds = clipbridge(jobs[name], fresh(root_path), threads, args.timeout)
                        cells.append(f"{seconds:.1f}" if seconds is not None else f"> {args.timeout:.0f}")
                machine = f"+{extra} busy, load {min(loads):.1f}-{max(loads):.1f}"
                print(f"| {name} | {machine} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
