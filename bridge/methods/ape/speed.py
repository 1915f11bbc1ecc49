"""Fit time of APE (batched search and the official grid) against Tip-Adapter on the same tasks (prints
figures; no assertions).

    python -m clipbridge.bridge.methods.ape.speed [--classes 101] [--shots 1 4 16] [--val 4 404] [--seeds 10]
                                                  [--repeats 3] [--threads N]

For every (validation size, shots) pair, one synthetic task of S seeds (bridge.speed.synthetic_task, D = W =
512) is fitted by tip-adapter, ape (search="batched") and ape (search="grid", 200 × 20 × 20 candidates),
interleaved `--repeats` times; the minimum of each is printed with its ratio to Tip-Adapter's (the minimum
is the figure least disturbed by other processes on a shared machine).
"""
from __future__ import annotations

import argparse
import time

import torch

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.ops import benchmark_process
from clipbridge.bridge.registry import REGISTRY
from clipbridge.bridge.speed import synthetic_task

CONTENDERS = (("tip-adapter", "tip-adapter", {}), ("ape batched", "ape", {"search": "batched"}),
              ("ape grid", "ape", {"search": "grid"}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clipbridge.bridge.methods.ape.speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--val", type=int, nargs="+", default=[4, 404])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    benchmark_process(args.threads)
    print(f"{args.classes} classes, D = W = 512, {args.seeds} seeds, min of {args.repeats} interleaved fits, "
          f"torch threads {torch.get_num_threads()}")
    print("| val queries | shots | " + " | ".join(f"{name} s" for name, _, _ in CONTENDERS) + " | ape batched / tip "
          "| ape grid / tip |")
    print("|---" * (len(CONTENDERS) + 4) + "|")
    for val in args.val:
        for shots in args.shots:
            task = synthetic_task(classes=args.classes, shots=shots, val=val, seeds=tuple(range(1, args.seeds + 1)))
            best = {name: float("inf") for name, _, _ in CONTENDERS}
            for _ in range(args.repeats):
                for name, method, hp in CONTENDERS:
                    start = time.perf_counter()
                    REGISTRY[method].fit(task, **hp)
                    best[name] = min(best[name], time.perf_counter() - start)
            tip = best["tip-adapter"]
            cells = " | ".join(f"{best[name]:.3f}" for name, _, _ in CONTENDERS)
            print(f"| {val} | {shots} | {cells} | {best['ape batched'] / tip:.2f}× | {best['ape grid'] / tip:.2f}× |",
                  flush=True)


if __name__ == "__main__":
    main()
