"""`python -m clipbridge.evaluate.bench.scale`: how each method's fit grows with the number of classes (issue 21).

For each class count C (default 100 and 1,000) a synthetic cache (K = 16 train images per class, D = W = 512,
`--val-per-class` validation images per class, the view families the paper recipes use) is written once; every
method × recipe is then fitted (`clipbridge.fit`, all seeds batched, clean protocol unless --protocol paper) in
a child process of its own, so that its peak memory (ru_maxrss) and a time limit (--timeout) are its own.
Printed per fit: fit seconds (the method's own fit_seconds, wall clock), total seconds (the whole
clipbridge.fit call as a user waits for it: the task built from the cache, the fit, the temperature
calibration), the child's CPU seconds over that call (process time: on a loaded machine the figure that other
processes' load does not inflate), peak
resident memory, the search's pruning share
(search_scored_share: the share of (query, class) pairs scored exactly per candidate, 1.0 = exhaustive), and
for each method the growth factor between the smallest and the largest C. The machine's load average is
printed too (other processes share the CPU).

--save-choices FILE writes the chosen hyper-parameters (per method, recipe, C, seed) as JSON; --check-choices
FILE compares this run's choices with such a file and exits non-zero on any difference (the before/after
check of issue 21: faster searches must choose the same hyper-parameters).
--val-queries N adds a paper-protocol run whose validation set is the cache's N val images (ImageNet: 50,000).
--device cuda fits on the GPU (times synchronised; peak MB is then the GPU's peak allocation), --precision picks
the fits' matrix-product precision (bridge.precision; default fp32, the figures' reference). --in-process fits
in this process (one CUDA start-up for all fits; a fit past --timeout is stopped at its next Python line, and
peak MB is only meaningful on CUDA), --budget stops starting fits after that many seconds (a device's lease).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_METHODS = "zeroshot,semobridge,tip-adapter,ape,gda,cmm,linear-probe"


def _fit_child(spec: dict) -> dict:
    """Fit one method in this (child) process; the figures of the fit as a JSON-able dict."""
    import resource

    from clipbridge.bridge.ops import benchmark_process

    benchmark_process(None)
    import clipbridge as cb
    from clipbridge.cache.reader import open_cache

    import torch

    device = spec.get("device", "cpu")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cache = open_cache(spec["cache"])
    start, cpu_start = time.perf_counter(), time.process_time()
    run = cb.fit(cache, method=spec["method"], shots=spec["shots"], seeds=spec["seeds"], recipe=spec["recipe"],
                 protocol=spec["protocol"], hparams=spec.get("hparams") or None, device=device,
                 precision=spec.get("precision", "fp32"))
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    info = run.state.info
    chosen = json.loads(json.dumps(run.state.hparams, default=str))
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return {"fit_seconds": float(info.get("fit_seconds", wall)), "wall_seconds": wall, "cpu_seconds": cpu,
            "search_seconds": float(info.get("search_seconds", 0.0)), "peak_mb": peak,
            "scored_share": info.get("search_scored_share"), "chosen": chosen,
            "val_accuracy": info.get("val_accuracy"), "precision": run.meta.get("precision")}


def _run_in_process(spec: dict, timeout: float) -> dict:
    """_fit_child in this process, stopped (SIGALRM) at its first Python line after `timeout` seconds."""
    import signal

    def stop(*_):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return _fit_child(spec)
    except TimeoutError:
        return {"error": f"not finished after {timeout:.0f} s"}
    except Exception as exc:  # noqa: BLE001 - a benchmark reports a failed fit and goes on
        return {"error": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run_child(spec: dict, timeout: float) -> dict:
    """_fit_child in a fresh interpreter (OMP threads as this process), with a time limit."""
    cmd = [sys.executable, "-m", "clipbridge.evaluate.bench.scale", "--child", json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {"error": f"not finished after {timeout:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"failed: {tail[0]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _warm_up(device: str, cache: str, shots: int) -> None:
    """One untimed zero-shot fit and product on `device`: the CUDA context and the GEMM libraries start here,
    not inside the first timed fit."""
    import torch

    torch.ones(64, 64, device=device).matmul(torch.ones(64, 64, device=device))
    _fit_child({"cache": cache, "method": "zeroshot", "shots": shots, "seeds": [1], "recipe": "uniform",
                "protocol": "clean", "device": device, "precision": "fp32"})


def _write_cache(folder: Path, classes: int, val: int, methods: list[str], shots: int, seed: int = 0) -> Path:
    from clipbridge.cache.synthetic import write_synthetic_cache
    from clipbridge.bridge.recipes import recipe_families
    from clipbridge.extract.views import get_family

    families = {name: get_family(name).copies for name in recipe_families("synthetic", [shots], methods)
                if name != "plain"}
    path = folder / f"synthetic{classes}-val{val}.h5"
    write_synthetic_cache(path, classes=classes, train_per_class=shots, dim=512, width=512, val=val, test=10,
                          families=families, prompts=3, seed=seed)
    return path


def _share(value) -> str:
    if value is None:
        return "1 (all)"
    if isinstance(value, (list, tuple)):
        return "/".join(f"{v:.3g}" for v in value)
    return f"{float(value):.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--classes", default="100,1000")
    parser.add_argument("--recipes", default="uniform,paper")
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--val-per-class", type=int, default=4)
    parser.add_argument("--val-queries", type=int, default=0,
                        help="also fit with --protocol paper on a cache of this many val images (largest C)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per fit (child process)")
    parser.add_argument("--hparam", action="append", default=[], metavar="METHOD.KEY=VALUE")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--precision", default="fp32", help="auto, fp32, bf16 or tf32 (bridge.precision)")
    parser.add_argument("--in-process", action="store_true", help="fit in this process (no child per fit)")
    parser.add_argument("--budget", type=float, default=0.0, help="start no fit after this many seconds (0: none)")
    parser.add_argument("--save-choices", help="write the chosen hyper-parameters to this JSON file")
    parser.add_argument("--check-choices", help="compare the chosen hyper-parameters with this JSON file")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_fit_child(json.loads(args.child))))
        return 0

    from clipbridge.cache.options import parse_int_list
    from clipbridge.evaluate.bench.options import checked_device
    from clipbridge.evaluate.commands.options import method_hparams

    methods = [m for m in args.methods.split(",") if m]
    classes = parse_int_list(args.classes, "--classes")
    seeds = parse_int_list(args.seeds, "--seeds")
    recipes = [r for r in args.recipes.split(",") if r]
    overrides = method_hparams(args.hparam, methods)
    device = checked_device(args.device, args.precision, methods)
    began = time.perf_counter()
    print(f"scale: device {device}, precision {args.precision}; methods {', '.join(methods)}; C = {classes}; K = {args.shots}, D = W = 512, seeds {seeds}, "
          f"recipes {recipes}, val {args.val_per_class}/class (clean protocol); OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for c in classes:
            cache = _write_cache(Path(tmp), c, args.val_per_class * c, methods, args.shots)
            runs += [(c, recipe, "clean", cache) for recipe in recipes]
        if args.val_queries:
            c = max(classes)
            cache = _write_cache(Path(tmp), c, args.val_queries, methods, args.shots)
            runs += [(c, "paper", "paper", cache)]
        if args.in_process and device.startswith("cuda") and runs:
            _warm_up(device, str(runs[0][3]), args.shots)
        print(f"{'method':>13} {'recipe':>7} {'protocol':>8} {'C':>5} {'Nv':>6} {'fit s':>8} {'total s':>8} {'cpu s':>8} "
              f"{'peak MB':>8} {'scored share':>14}")
        for method in methods:
            for c, recipe, protocol, cache in runs:
                nv = args.val_queries if protocol == "paper" else args.val_per_class * c
                spec = {"cache": str(cache), "method": method, "shots": args.shots, "seeds": seeds,
                        "recipe": recipe, "protocol": protocol, "hparams": overrides.get(method, {}),
                        "device": device, "precision": args.precision}
                if args.budget and time.perf_counter() - began > args.budget:
                    out = {"error": f"not started (--budget {args.budget:.0f} s spent)"}
                else:
                    out = (_run_in_process if args.in_process else _run_child)(spec, args.timeout)
                key = f"{method}|{recipe}|{protocol}|C{c}"
                results[key] = out
                if "error" in out:
                    print(f"{method:>13} {recipe:>7} {protocol:>8} {c:>5} {nv:>6} {out['error']}", flush=True)
                    continue
                print(f"{method:>13} {recipe:>7} {protocol:>8} {c:>5} {nv:>6} {out['fit_seconds']:8.2f} "
                      f"{out.get('wall_seconds', float('nan')):8.2f} {out.get('cpu_seconds', float('nan')):8.2f} {out['peak_mb']:8.0f} {_share(out['scored_share']):>14}   load {os.getloadavg()[0]:.2f}",
                      flush=True)
    if len(classes) > 1:
        lo, hi = min(classes), max(classes)
        print(f"growth from C = {lo} to {hi} (fit seconds; CPU seconds):")
        for method in methods:
            for recipe in recipes:
                a, b = results.get(f"{method}|{recipe}|clean|C{lo}", {}), results.get(f"{method}|{recipe}|clean|C{hi}", {})
                if "fit_seconds" in a and "fit_seconds" in b:
                    cpu = b.get("cpu_seconds", math.nan) / max(a.get("cpu_seconds", math.nan), 1e-9)
                    print(f"{method:>13} {recipe:>7}: {b['fit_seconds'] / max(a['fit_seconds'], 1e-9):7.1f}x; "
                          f"{cpu:7.1f}x")
    choices = {k: v.get("chosen") for k, v in results.items() if "chosen" in v}
    if args.save_choices:
        Path(args.save_choices).write_text(json.dumps(choices, indent=1, sort_keys=True))
    if args.check_choices:
        before = json.loads(Path(args.check_choices).read_text())
        common = sorted(set(before) & set(choices))
        differ = [k for k in common if before[k] != choices[k]]
        print(f"chosen hyper-parameters vs {args.check_choices}: {len(common)} fits compared, "
              f"{len(differ)} differ" + (f": {differ}" if differ else ""))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
