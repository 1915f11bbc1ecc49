"""`python -m clipbridge.evaluate.bench.paper_grid`: the time of the whole paper grid (issue 21, item 5).

For each of the 11 CoOp datasets (or --datasets) a synthetic cache with that dataset's real size is written
(classes, val and test images of CoOp's splits, 16 train images per class, D = W = 512, the named CuPL sets
cupl:ape and cupl:semobridge the paper recipes read (the synthetic CuPL sentences), the view families
the paper recipes use on it, recorded under the dataset's name so its recipe rows apply); then
`bench --methods all --shots 1,2,4,8,16 --seeds 1-3 --recipe paper` runs on it (the clean protocol, as bench
defaults). Printed: per dataset and method the fit seconds, the bench's wall and CPU (process) seconds, and
the totals (fit, and the whole bench: task building, fitting, test scoring, records, tables).

--train-fraction f (--quick sets 0.02 and, unless --datasets is given, three small datasets): the trained
methods' steps / epochs are set to max(1, round(f × their recipe value)) and their fit seconds are then
EXTRAPOLATED linearly to the full schedule (× value / used), which counts their untrained part (feature
preparation, validation search) that many times too: an upper estimate, labelled "extrapolated".

--results DIR keeps each dataset's synthetic cache (DIR/<dataset>.h5) and bench results (DIR/<dataset>/)
instead of a temporary folder: every fitted cell's records are appended there as it finishes, so a run stopped
by a time limit leaves what it measured (fit_seconds per record), and the same command run again reuses the
cache and resumes at the first missing cell (the bench skips the cells it finds; the bench seconds printed are
then those of the resumed part).

Split sizes: CoOp's Table of dataset statistics (Zhou et al., "Learning to Prompt for Vision-Language
Models", IJCV 2022; the split_zhou_*.json files of KaiyangZhou/CoOp): classes, train, val, test.
ImageNet has no val split there (its test = the 50,000 ILSVRC val images); the few-shot validation of the
clean protocol comes from the train images, so val is set to 1 image per class here and unused.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# dataset: (classes, train, val, test) of CoOp's splits (module docstring)
COOP_SPLITS = {
    "imagenet": (1000, 1281167, 0, 50000),
    "caltech101": (100, 4128, 1649, 2465),
    "oxford_pets": (37, 2944, 736, 3669),
    "stanford_cars": (196, 6509, 1635, 8041),
    "oxford_flowers": (102, 4093, 1633, 2463),
    "food101": (101, 50500, 20200, 30300),
    "fgvc_aircraft": (100, 3334, 3333, 3333),
    "sun397": (397, 15880, 3970, 19850),
    "dtd": (47, 2820, 1128, 1692),
    "eurosat": (10, 13500, 5400, 8100),
    "ucf101": (101, 7639, 1898, 3783),
}
# hyper-parameters holding a trained method's schedule length
SCHEDULE = {"semobridge-t": "steps", "cmm": "steps", "tip-adapter-f": "epochs", "clip-adapter": "epochs",
            "ape-t": "epochs"}
QUICK_DATASETS = "eurosat,dtd,oxford_pets"



def schedule_length(method: str, dataset: str, shots: int) -> int | None:
    """The recipe's (or the default) steps / epochs of a trained method, None for the others."""
    from clipbridge.bridge.registry import get_method
    from clipbridge.bridge.recipes import resolve_recipe

    key = SCHEDULE.get(method)
    if key is None:
        return None
    value = resolve_recipe(method, dataset, shots).hparams.get(key, get_method(method).defaults.get(key))
    return None if value is None else int(value)


def _reusable(cache: Path, classes: int, shots: int, families: dict[str, int]) -> bool:
    """Whether a cache kept by --results has the classes, train images per class and view families this run
    writes (else it is written again and the dataset's kept results are dropped)."""
    import h5py

    if not cache.exists():
        return False
    with h5py.File(cache, "r") as file:
        written = json.loads(file.attrs.get("synthetic", "{}"))
    return (written.get("classes"), written.get("train_per_class"), written.get("families")) == (
        classes, shots, families)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=None, help="comma-separated (default: all 11)")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="train fraction 0.02, three small datasets")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (the GPU figure)")
    parser.add_argument("--results", default=None, help="keep the bench results here, one folder per dataset")
    args = parser.parse_args(argv)
    from clipbridge.bridge.ops import benchmark_process

    benchmark_process(None)
    from clipbridge.cache.synthetic import write_synthetic_cache
    from clipbridge.evaluate.bench.options import checked_device
    from clipbridge.evaluate.bench.grid import BenchSpec, run_bench
    from clipbridge.cache.options import parse_int_list
    from clipbridge.evaluate.commands.options import method_names
    from clipbridge.bridge.recipes import recipe_families
    from clipbridge.bridge.recipes.common import APE_CUPL, SEMOBRIDGE_CUPL
    from clipbridge.evaluate.reporting.records import read_records, results_path
    from clipbridge.extract.views import get_family

    fraction = 0.02 if args.quick and args.train_fraction == 1.0 else args.train_fraction
    names = (args.datasets or (QUICK_DATASETS if args.quick else ",".join(COOP_SPLITS))).split(",")
    unknown = [d for d in names if d not in COOP_SPLITS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; known: {', '.join(COOP_SPLITS)}")
    methods = method_names(args.methods)
    device = checked_device(args.device)
    shots, seeds = parse_int_list(args.shots, "--shots"), parse_int_list(args.seeds, "--seeds")
    print(f"paper grid on {device}: {len(names)} datasets, {len(methods)} methods, shots {shots}, seeds {seeds}, recipe paper, "
          f"protocol clean; trained schedules x{fraction:g} (extrapolated linearly when < 1); OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.2f}")
    totals: dict[str, float] = {m: 0.0 for m in methods}
    whole = 0.0
    for dataset in names:
        classes, _, val, test = COOP_SPLITS[dataset]
        overrides, factor = {}, {}
        for method in methods:
            full = schedule_length(method, dataset, max(shots))
            if full is not None and fraction < 1.0:
                used = max(1, round(full * fraction))
                overrides[method] = {SCHEDULE[method]: used}
                factor[method] = full / used
        families = {n: get_family(n).copies for n in recipe_families(dataset, shots, methods) if n != "plain"}
        with tempfile.TemporaryDirectory() as folder:
            kept = Path(args.results) if args.results else None
            cache = (kept or Path(folder)) / f"{dataset}.h5"
            if kept is None or not _reusable(cache, classes, max(shots), families):
                cache.parent.mkdir(parents=True, exist_ok=True)
                if kept is not None:                     # results of another cache would be summed with ours
                    shutil.rmtree(kept / dataset, ignore_errors=True)
                write_synthetic_cache(cache, classes=classes, train_per_class=max(shots), dim=512, width=512,
                                      val=max(val, classes), test=test, families=families, prompts=3, seed=0,
                                      dataset=dataset, overwrite=True,
                                      named_cupl=tuple(n.partition(':')[2] for n in (APE_CUPL, SEMOBRIDGE_CUPL)))
            spec = BenchSpec(caches=(cache,), methods=tuple(methods), shots=tuple(shots), seeds=tuple(seeds),
                             device=device, hparams=overrides, recipe="paper")
            results = kept / dataset if kept else Path(folder) / "results"
            start, cpu_start = time.perf_counter(), time.process_time()
            run_bench(spec, results, "paper-grid", progress=False, echo=lambda text: None)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            records = read_records(results_path(results))
        line, extra = [], 0.0
        for method in methods:
            measured = sum(r["fit_seconds"] / r.get("seeds_batched", 1) for r in records if r["method"] == method)
            fit = measured * factor.get(method, 1.0)
            extra += fit - measured
            totals[method] += fit
            line.append(f"{method} {fit:.1f}" + ("*" if method in factor else ""))
        whole += seconds + extra
        print(f"{dataset:>15} (C={classes}, val {val}, test {test}): bench {seconds:.1f} s measured (CPU {cpu:.1f} s)"
              f"{f' + {extra:.1f} s extrapolated' if factor else ''}; fit s: " + ", ".join(line), flush=True)
    print("per method, all datasets (fit seconds; * = extrapolated from a shortened schedule):")
    for method in methods:
        print(f"{method:>14}: {totals[method]:9.1f} s")
    print(f"{'total':>14}: fit {sum(totals.values()):.1f} s; whole bench {whole:.1f} s ({whole / 3600:.2f} h) on "
          f"{device}, load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
