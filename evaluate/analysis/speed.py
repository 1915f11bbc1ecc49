"""`python -m clipbridge.evaluate.analysis.speed`: seconds of `analyze` on a synthetic 101-class cache.

Writes the cache (101 classes × 16 shots, D = W = 512, 5,000 test images by default), fits the three
bridges once on the spot (SeMoBridge-T with --steps training steps: the analysis' cost does not depend on
it, the state has the same tensors), saves them as runs, then times the analysis from those saved runs:
in-process (--repeats times; load = runs, task and support, measure = test images, representations,
metrics and method accuracy, plots, write) and as one `clipbridge analyze --run ...` process (Python start
and imports included). Prints every figure. With --workdir DIR the cache and runs are kept there and reused
by the next call with the same settings (no refit).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--val", type=int, default=404)
    parser.add_argument("--steps", type=int, default=500, help="SeMoBridge-T training steps of the one-off fit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", default=None, help="keep (and reuse) the cache and runs here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    import torch

    from clipbridge.bridge.ops import benchmark_process

    benchmark_process(args.threads)
    from clipbridge.cache.reader import open_cache
    from clipbridge.cache.synthetic import write_synthetic_cache
    from clipbridge.evaluate.analysis.analyze import DEFAULT_METHODS, AnalysisSpec, run_analysis

    print(f"cache: {args.classes} classes × {args.shots} shots, D={args.dim}, W={args.width}, {args.test} test "
          f"images; device {args.device}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as scratch:
        settings = f"c{args.classes}-k{args.shots}-d{args.dim}-w{args.width}-t{args.test}-v{args.val}-s{args.steps}"
        root = Path(args.workdir or scratch) / settings
        path = root / "synthetic101.h5"
        if not path.is_file():
            write_synthetic_cache(path, classes=args.classes, train_per_class=args.shots, dim=args.dim,
                                  width=args.width, val=args.val, test=args.test, seed=0)
        runs = sorted((root / "runs").glob("*/*/*"))
        if len(runs) != len(DEFAULT_METHODS):
            fitted = run_analysis(AnalysisSpec(methods=DEFAULT_METHODS, shots=args.shots, device=args.device,
                                               hparams={"semobridge-t": {"steps": args.steps}},
                                               save_runs=root / "runs"), open_cache(path))
            runs = [Path(rep["source"]["run"]) for rep in fitted.document["representations"][1:]]
            for rep in fitted.document["representations"][1:]:
                print(f"one-off fit {rep['name']:>13}: {rep['source']['fit_seconds']:7.2f} s"
                      + (f" ({args.steps} training steps)" if rep["name"] == "semobridge-t" else ""))
        else:
            print(f"runs reused from {root / 'runs'} (no refit)")
        spec = AnalysisSpec(runs=tuple(runs), device=args.device)
        phases: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            start = time.perf_counter()
            analysis = run_analysis(spec, open_cache(path), root / "analysis", f"repeat{repeat}")
            analysis.seconds["total"] = time.perf_counter() - start
            for name, value in analysis.seconds.items():
                phases.setdefault(name, []).append(value)
        print(f"analysis from saved runs, in process ({args.repeats} repeats, median [min-max]):")
        for name in ("load", "measure", "plots", "write", "total"):
            values = phases[name]
            print(f"  {name:>8}: {statistics.median(values):6.2f} s [{min(values):.2f}-{max(values):.2f}]")
        command = [sys.executable, str(REPO / "cli.py"), "analyze", "--device", args.device, "--out",
                   str(root / "analysis"), "--name", "cli"] + [x for run in runs for x in ("--run", str(run))]
        start = time.perf_counter()
        env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(done.stderr)
        print(f"`clipbridge analyze --run x3` process, start to exit: {seconds:.2f} s")
        print(done.stdout.split("\n", 1)[1].split("json:")[0].rstrip())


if __name__ == "__main__":
    main()
