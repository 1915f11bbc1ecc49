"""Fit time of every baseline with its default hyper-parameters on a synthetic task of realistic size.

    .venv/bin/python tests/bench_baselines.py --classes 100 --shots 16 --dim 512 --seeds 3 [--device cuda]

Prints one line per method: fit and search seconds (all seeds together), validation and test accuracy.
Not a test (no assertions); figures depend on the machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic_tasks import make_task  # noqa: E402

from clipbridge.bridge.registry import get_method  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="zeroshot,tip-adapter,tip-adapter-f,gda,linear-probe,cmm")
    args = parser.parse_args()
    task, test_x, test_y = make_task(seeds=tuple(range(1, args.seeds + 1)), classes=args.classes, shots=args.shots,
                                     views=args.views, dim=args.dim, width=args.dim, val_per_class=min(args.shots, 4),
                                     test_per_class=20, image_noise=3.0, text_noise=4.0)
    task, test_x = task.to(args.device), test_x.to(args.device)
    print(f"task: S={args.seeds} C={args.classes} K={args.shots} V={args.views} D={args.dim} "
          f"Nv={task.val.shape[1]} device={args.device} threads={torch.get_num_threads()}")
    get_method("zeroshot").fit(task)                                      # warm-up (imports, allocator)
    for name in args.methods.split(","):
        m = get_method(name)
        start = time.perf_counter()
        state = m.fit(task)
        logits = m.logits(state, test_x)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        total = time.perf_counter() - start
        acc = 100.0 * (logits.argmax(-1) == test_y.to(logits.device)).double().mean(-1)
        val = sum(state.info["val_accuracy"]) / len(state.info["val_accuracy"])
        print(f"{name:14s} fit {state.info['fit_seconds']:7.2f}s  search {state.info['search_seconds']:6.2f}s  "
              f"fit+test {total:7.2f}s  val {val:5.1f}%  test {acc.mean().item():5.1f}%")


if __name__ == "__main__":
    main()
