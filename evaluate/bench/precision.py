"""Test accuracy and fit time of every method with its matrix products in bf16 / tf32 against fp32
(bridge.precision), over 10 seeds: the table behind `--precision auto` (bridge.precision.AUTO_SAFE).

    python -m clipbridge.evaluate.bench.precision --cache demo-shapes.h5 --cache synth100.h5 \\
        [--methods all] [--shots 16] [--seeds 1-10] [--precisions bf16,tf32] [--hparam semobridge-t.steps=500]

Per cache and method: one fit of all seeds batched at fp32 and one per reduced precision (uniform recipe,
clean protocol, default hyper-parameters unless --hparam), each scored on the test split at fp32. Printed:
mean test accuracy at fp32, the mean difference (reduced − fp32) over seeds, the largest per-seed |difference|,
the fit seconds and the speed-up (fp32 seconds / reduced seconds), and whether the method passes the
auto rule (mean |difference| <= bridge.precision.AUTO_MAX_MEAN_DIFF). The kernel is stated: "native" /
"cuda" run the fast kernels; "emulated" (a CPU without bf16 arithmetic, or tf32 off CUDA) rounds the
product operands and multiplies in fp32, so its accuracy is that of the precision and its speed is not.
Also printed: this machine's fp32 and bf16 GEMM rates at [4096, 512] x [512, 512].
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from clipbridge.bridge import precision as bp


def gemm_rates(repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of [4096, 512] x [512, 512] in fp32 and in bf16 (bfloat16 tensors) on this CPU (best of
    `repeats`)."""
    a, b = torch.randn(4096, 512), torch.randn(512, 512)
    rates = {}
    for name, (x, y) in (("fp32", (a, b)), ("bf16", (a.bfloat16(), b.bfloat16()))):
        x @ y
        best = float("inf")
        for _ in range(repeats if name == "fp32" else 1):
            start = time.perf_counter()
            x @ y
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * 4096 * 512 * 512 / best / 1e9
    return rates


def reduced(name: str, method: str, device: torch.device):
    """(context, kernel) for a fit at precision `name` ("bf16" or "tf32") on `device`."""
    if name == "tf32" and device.type != "cuda":
        return bp.emulated("tf32"), "emulated"
    chosen = bp.resolve_precision(name, method, device)
    return bp.products_in(chosen), chosen.kernel or "cuda"


def main(argv: list[str] | None = None) -> None:
    from clipbridge.cache.reader import open_cache
    from clipbridge.bridge.devices import resolve_device
    from clipbridge.cache.options import parse_int_list
    from clipbridge.evaluate.commands.options import method_hparams, method_names
    from clipbridge.evaluate.fitting.plan import plan_fit
    from clipbridge.evaluate.fitting.scoring import fit_method, score_queries
    from clipbridge.evaluate.fitting.tasks import build_fit_task, load_test

    parser = argparse.ArgumentParser(prog="python -m clipbridge.evaluate.bench.precision",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", action="append", required=True, help="a cache file (repeatable)")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seeds", default="1-10")
    parser.add_argument("--precisions", default="bf16,tf32")
    parser.add_argument("--hparam", action="append", default=[], metavar="METHOD.KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    from clipbridge.bridge.ops import benchmark_process

    benchmark_process(args.threads)
    methods = method_names(args.methods)
    per_method = method_hparams(tuple(args.hparam), methods)
    seeds = parse_int_list(args.seeds, "--seeds")
    names = [p for p in args.precisions.split(",") if p]
    device = resolve_device(args.device)
    rates = gemm_rates()
    print(f"device {device}, torch threads {torch.get_num_threads()}, bf16 kernel on this CPU: "
          f"{bp.bf16_kernel('cpu')}; GEMM [4096,512]x[512,512]: fp32 "
          f"{rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.1f} GFLOP/s")
    print("| cache | method | precision (kernel) | fp32 test % | mean Δ | max |Δ| seed | fp32 s | reduced s | "
          "speed-up | auto-safe |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in args.cache:
        cache = open_cache(path)
        label = str(cache.attrs.get("dataset", path))
        queries, labels = load_test(cache, device=str(device))
        for method in methods:
            plan = plan_fit(cache, method, args.shots, recipe="uniform", overrides=per_method.get(method))
            task, _ = build_fit_task(cache, shots=args.shots, seeds=seeds, families=plan.families,
                                     prompt_sets=plan.prompt_sets, device=str(device))
            start = time.perf_counter()
            base = score_queries(fit_method(method, task, plan.hparams, calibration="none"), queries, labels)
            base_s = time.perf_counter() - start
            for name in names:
                context, kernel = reduced(name, method, device)
                start = time.perf_counter()
                with context:
                    state = fit_method(method, task, plan.hparams, calibration="none")
                fit_s = time.perf_counter() - start
                other = score_queries(state, queries, labels)
                diffs = [o - b for o, b in zip(other, base)]
                mean = statistics.fmean(diffs)
                worst = max(diffs, key=abs)
                print(f"| {label} | {method} | {name} ({kernel}) | {statistics.fmean(base):.2f} | {mean:+.3f} | "
                      f"{worst:+.2f} | {base_s:.2f} | {fit_s:.2f} | {base_s / fit_s:.2f}x | "
                      f"{'yes' if abs(mean) <= bp.AUTO_MAX_MEAN_DIFF else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
