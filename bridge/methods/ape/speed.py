"""Fit time of the exact official grids (search="grid", the paper recipe) against the batched search
(search="batched", the uniform recipe) for Tip-Adapter, APE and GDA on the same tasks (prints figures; no
assertions).

    python -m clipbridge.bridge.methods.ape.speed [--classes 101] [--shots 1 4 16] [--val 4 404] [--seeds 10]
                                                  [--repeats 3] [--threads N]

For every (validation size, shots) pair, one synthetic task of S seeds (bridge.speed.synthetic_task, D = W =
512) is fitted by each method with each search (grids: Tip-Adapter 200 × 20 over the paper recipe's default
box, APE 200 × 20 × 20, GDA the 7 powers of ten), interleaved `--repeats` times; the minimum of each is
printed with its ratio to Tip-Adapter's batched fit (the minimum is the figure least disturbed by other
processes on a shared machine). `--pruned` adds APE's grid scored by bridge.cache_search's pruned path alone
(its dense path turned off), the scoring before the dense path existed.
"""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge import cache_search
from clipbridge.bridge.ops import benchmark_process
from clipbridge.bridge.recipes.tip_adapter import TIP_DEFAULT, tip_search
from clipbridge.bridge.registry import REGISTRY
from clipbridge.bridge.speed import synthetic_task

CONTENDERS = (("tip batched", "tip-adapter", {}), ("tip grid", "tip-adapter", tip_search(TIP_DEFAULT)),
              ("ape batched", "ape", {"search": "batched"}), ("ape grid", "ape", {"search": "grid"}),
              ("gda batched", "gda", {"search": "batched"}), ("gda grid", "gda", {"search": "grid"}))
REFERENCE = "tip batched"
PRUNED = ("ape grid pruned", "ape", {"search": "grid"})


@contextmanager
def pruned_only(on: bool):
    """bridge.cache_search without its dense path while `on`."""
    saved = cache_search.DENSE_WORK, cache_search.DENSE_WORK_SPREAD
    if on:
        cache_search.DENSE_WORK = cache_search.DENSE_WORK_SPREAD = -1.0
    try:
        yield
    finally:
        cache_search.DENSE_WORK, cache_search.DENSE_WORK_SPREAD = saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clipbridge.bridge.methods.ape.speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--val", type=int, nargs="+", default=[4, 404])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pruned", action="store_true", help="also APE's grid scored by the pruned path alone")
    args = parser.parse_args(argv)
    contenders = CONTENDERS + ((PRUNED,) if args.pruned else ())
    benchmark_process(args.threads)
    print(f"{args.classes} classes, D = W = 512, {args.seeds} seeds, min of {args.repeats} interleaved fits, "
          f"torch threads {torch.get_num_threads()}")
    print("| val queries | shots | " + " | ".join(f"{name} s" for name, _, _ in contenders) + " | "
          + " | ".join(f"{name} / {REFERENCE}" for name, _, _ in contenders[1:]) + " |")
    print("|---" * (2 * len(contenders) + 1) + "|")
    for val in args.val:
        for shots in args.shots:
            task = synthetic_task(classes=args.classes, shots=shots, val=val, seeds=tuple(range(1, args.seeds + 1)))
            best = {name: float("inf") for name, _, _ in contenders}
            for _ in range(args.repeats):
                for name, method, hp in contenders:
                    start = time.perf_counter()
                    with pruned_only(name == PRUNED[0]):
                        REGISTRY[method].fit(task, **hp)
                    best[name] = min(best[name], time.perf_counter() - start)
            cells = " | ".join(f"{best[name]:.3f}" for name, _, _ in contenders)
            ratios = " | ".join(f"{best[name] / best[REFERENCE]:.2f}×" for name, _, _ in contenders[1:])
            print(f"| {val} | {shots} | {cells} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
