"""`python -m clipbridge.evaluate.bench.speed`: records per second of the full bench grid on a synthetic 101-class cache.

Grid: every registered method (or --methods) × shots 1, 2, 4, 8, 16 × 10 seeds, seeds batched per cell,
on this machine's CPU (or --device). Prints the methods used, the seconds per method and per cell, and
records/s. `--recipe paper` (default) runs each method's default recipe row (the synthetic dataset is not
one of the 11 CoOp ones), the cache holding every view family those rows use (e.g. Tip-Adapter's 10 crops);
`--recipe uniform` runs every method on the plain view with its default hyper-parameters.
`--hparam METHOD.KEY=VALUE` (repeatable) overrides a method's hyper-parameter, as in `bench`.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from clipbridge.bridge.recipes import DEFAULT_RECIPE, RECIPE_NAMES, UNIFORM
from clipbridge.evaluate.bench.grid import BenchSpec, run_bench
from clipbridge.evaluate.reporting.records import read_records, results_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="all", help="'all' registered methods or a comma-separated list")
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--val", type=int, default=4, help="validation images in the synthetic cache")
    parser.add_argument("--seeds", default="1-10")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hparam", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="override a method's hyper-parameter (repeatable), e.g. ape.search=grid")
    parser.add_argument("--recipe", choices=RECIPE_NAMES, default=DEFAULT_RECIPE)
    args = parser.parse_args(argv)
    from clipbridge.bridge.ops import benchmark_process

    benchmark_process(None)  # as the CLI does: subnormal softmax tails slow CPU products

    import torch

    from clipbridge.bridge.errors import BridgeInputError
    from clipbridge.errors import ClipBridgeError
    from clipbridge.cache.synthetic import write_synthetic_cache
    from clipbridge.cache.options import parse_int_list
    from clipbridge.evaluate.commands.options import method_hparams, method_names
    from clipbridge.bridge.recipes import recipe_families
    from clipbridge.extract.views import get_family

    try:
        methods = method_names(args.methods)
        shots, seeds = parse_int_list(args.shots, "--shots"), parse_int_list(args.seeds, "--seeds")
        hparams = method_hparams(args.hparam, methods)
    except (ClipBridgeError, BridgeInputError) as error:
        parser.error(str(error))
    families = {} if args.recipe == UNIFORM else {
        name: get_family(name).copies for name in recipe_families("synthetic", shots, methods) if name != "plain"}
    print(f"methods ({len(methods)} registered/selected): {', '.join(methods)}")
    if hparams:
        print(f"hyper-parameters: {hparams}")
    print(f"grid: {args.classes} classes, D={args.dim}, W={args.width}, shots {shots}, {len(seeds)} seeds; "
          f"recipe {args.recipe} (support views: plain" + "".join(f" + {n} {f}" for f, n in families.items())
          + f"); device {args.device}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "synthetic101.h5"
        write_synthetic_cache(cache, classes=args.classes, train_per_class=max(shots), dim=args.dim,
                              width=args.width, val=args.val, test=30, families=families, prompts=3, seed=0)
        spec = BenchSpec(caches=(cache,), methods=tuple(methods), shots=tuple(shots), seeds=tuple(seeds),
                         device=args.device, hparams=hparams, recipe=args.recipe)
        start = time.perf_counter()
        run_bench(spec, Path(folder) / "results", "speed", progress=False, echo=lambda text: None)
        seconds = time.perf_counter() - start
        records = read_records(results_path(Path(folder) / "results"))
        for method in methods:
            mine = [r for r in records if r["method"] == method]
            fit = sum(r["fit_seconds"] / r.get("seeds_batched", 1) for r in mine)
            print(f"{method:>14}: {len(mine)} records, fit {fit:7.2f} s = {len(mine) / max(fit, 1e-9):9.2f} "
                  f"records/s (fit only)")
            cells = {k: sum(r["fit_seconds"] / r.get("seeds_batched", 1) for r in mine if r["shots"] == k)
                     for k in shots}
            print(f"{'':>14}  fit seconds per cell of {len(seeds)} seeds, shots "
                  + " / ".join(f"{k}: {v:.3g}" for k, v in cells.items()))
        print(f"{'whole grid':>14}: {len(records)} records in {seconds:.2f} s (task building, fitting, test "
              f"scoring, records, tables, plot) = {len(records) / seconds:.2f} records/s")


if __name__ == "__main__":
    main()
