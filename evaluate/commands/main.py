"""Commands `fit`, `evaluate`, `predict`, `bench` and `demo` (click), thin wrappers over evaluate/*.

    python cli.py fit --dataset food101 --shots 16 [--trained] [--method cmm] [--seeds 1-3]
    python cli.py evaluate runs/food101/semobridge/shots16-seeds1-3-ab12cd34
    python cli.py bench --dataset food101,dtd --methods all --shots 1,2,4,8,16 --seeds 1-10
    python cli.py bench --dataset food101 --sweep semobridge-t.steps=500,1000,5000
    python cli.py demo [--quick]
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from clipbridge.bridge.recipes import DEFAULT_RECIPE, METHOD_NAMES, RECIPE_NAMES
from clipbridge.cache.options import PROTOCOLS, parse_hparams, parse_int_list, parse_names
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.commands.options import method_hparams, method_names, resolve_cache
from clipbridge.evaluate.fitting.choices import CALIBRATIONS, CONFORMAL_MODES, CONFORMAL_SCORES
from clipbridge.evaluate.reporting.records import writable_dir


# ----------------------------------------------------------------------------- option helpers

def _echo_task_notes(meta: dict[str, Any]) -> None:
    short = meta.get("short_classes") or {}
    if short:
        listed = ", ".join(f"{name} ({n})" for name, n in list(short.items())[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        click.echo(f"note: {len(short)} class(es) have fewer than {meta['shots']} train images; CoOp keeps all "
                   f"they have: {listed}{more}", err=True)
    if meta.get("val_is_test"):
        click.echo(f"warning: VAL = TEST: {meta['cache']} has no val split, so protocol 'paper' validates on "
                   "the test set (the paper's test leak); these results are flagged val_is_test", err=True)


_cache_options = [
    click.option("--model", default=None, help="CLIP model of the cache (default: the only one with the dataset)."),
    click.option("--pretrained", default=None,
                 help="pretrained tag or checkpoint file (default: the only weights with the dataset); a file "
                      "must be the one the cache was extracted with (its SHA-256)."),
    click.option("--cache-root", default="cache", show_default=True, help="folder of the caches."),
]
_fit_options = [
    click.option("--recipe", "recipe_name", type=click.Choice(RECIPE_NAMES), default=DEFAULT_RECIPE,
                 show_default=True, help="paper: each method run as its paper ran it, per dataset and shot count "
                 "(`clipbridge recipe`); uniform: the same view families and prompts for every method, default "
                 "hyper-parameters."),
    click.option("--view-family", "view_families", default=None,
                 help="view families of the support images, comma-separated (see `extract "
                      "--list-view-families`); --recipe uniform: default plain; --recipe paper: default the "
                      "recipe's, others given replace them and are recorded as an override."),
    click.option("--prompts", default=None,
                 help="Text sets, comma-separated, e.g. coop,cupl:ape; they replace the recipe's (--recipe "
                      "uniform: default every set in the cache)."),
    click.option("--protocol", type=click.Choice(PROTOCOLS), default="clean", show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "tf32"]), default="auto",
                 show_default=True, help="matrix products while fitting: bf16 (fp32 accumulation) or tf32 (CUDA); "
                 "auto picks them only for methods and devices measured not to change the accuracy."),
    click.option("--results", default="results", show_default=True, help="folder of results.jsonl."),
]


_calibration_options = [
    click.option("--calibration", type=click.Choice(CALIBRATIONS), default=None,
                 help="probabilities: temperature (the one the run fitted; the default when it has one) or none "
                      "(the softmax of the method's logits)."),
    click.option("--coverage", type=float, default=None,
                 help="conformal prediction sets holding the true class with this probability (e.g. 0.9), "
                      "calibrated on held-out labelled images of the run's cache."),
    click.option("--conformal", type=click.Choice(CONFORMAL_MODES), default="marginal", show_default=True,
                 help="marginal: coverage over all images; classwise: coverage for every class (needs more "
                      "held-out images per class)."),
    click.option("--conformal-score", type=click.Choice(CONFORMAL_SCORES), default="lac", show_default=True,
                 help="lac: smallest sets on average; aps: sets that grow on hard images."),
]


def _with(options):
    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


# ----------------------------------------------------------------------------- fit

@click.command()
@click.option("--dataset", default=None, help="dataset name (its cache under --cache-root).")
@click.option("--cache", "cache_path", default=None, type=click.Path(dir_okay=False), help="a cache file.")
@_with(_cache_options)
@click.option("--method", default=None, help="method (default semobridge): " + ", ".join(METHOD_NAMES)
              + "; `clipbridge methods` lists their hyper-parameters.")
@click.option("--trained", is_flag=True, help="SeMoBridge-T (= --method semobridge-t).")
@click.option("--shots", default=16, show_default=True, type=int)
@click.option("--seed", default=None, type=int, help="one seed (default 1).")
@click.option("--seeds", default=None, help="seeds: a list or ranges, e.g. 1-10 or 1-3,5.")
@_with(_fit_options)
@click.option("--selection", type=click.Choice(["best-val", "last"]), default=None,
              help="semobridge-t: the training step kept.")
@click.option("--parity", is_flag=True,
              help="semobridge-t: keep the last step's prototypes, as the authors' code does.")
@click.option("--hparam", "hparam_items", multiple=True, metavar="KEY=VALUE", help="passed to fit (repeatable).")
@click.option("--runs", "runs_root", default="runs", show_default=True, help="folder of saved runs.")
@click.option("--no-progress", is_flag=True, help="no training progress bar (none is drawn off a terminal).")
@click.option("--calibration", type=click.Choice(CALIBRATIONS), default="temperature", show_default=True,
              help="temperature: fit one temperature per seed on the validation queries the method's selection "
                   "used, so probabilities match accuracy; none: the softmax of the method's logits.")
def fit(dataset, cache_path, model, pretrained, cache_root, method, trained, shots, seed, seeds, recipe_name,
        view_families, prompts, protocol, device, dtype, precision, results, selection, parity, hparam_items,
        runs_root, no_progress, calibration) -> None:
    """Fit a method on CoOp few-shot samples of a cache (all seeds batched), score it, save the run."""
    from clipbridge.bridge.registry import check_hparams, get_method
    from clipbridge.cache.reader import open_cache
    from clipbridge.evaluate.fitting.runner import fit_and_report

    if dataset is not None and cache_path is not None:
        raise ClipBridgeError("give --dataset NAME or --cache PATH, not both")
    if trained and method not in (None, "semobridge-t"):
        raise ClipBridgeError(f"--trained means --method semobridge-t, not {method!r}")
    method = "semobridge-t" if trained else (method or "semobridge")
    if seed is not None and seeds is not None:
        raise ClipBridgeError("give --seed or --seeds, not both")
    seed_list = parse_int_list(seeds, "--seeds") if seeds is not None else [seed if seed is not None else 1]
    overrides = parse_hparams(hparam_items)
    trained_only = (("--selection", "selection", selection), ("--parity", "parity_stale_prototypes", parity or None))
    for flag, key, value in trained_only:
        if value is not None:
            if method != "semobridge-t":
                raise ClipBridgeError(f"{flag} applies to semobridge-t only (method is {method!r})")
            overrides[key] = value
    check_hparams(get_method(method), overrides)           # before any work: one line for a bad value
    writable_dir(results, "--results")
    writable_dir(runs_root, "--runs")
    path = Path(cache_path) if cache_path else resolve_cache(dataset, model, pretrained, cache_root)
    cache = open_cache(path, model=model, pretrained=pretrained)
    fit_and_report(cache, method=method, shots=shots, seeds=seed_list, recipe=recipe_name,
                   view_families=parse_names(view_families), prompts=parse_names(prompts), protocol=protocol,
                   device=device, dtype=dtype, precision=precision, overrides=overrides, runs_root=runs_root,
                   results_dir=results, calibration=calibration,
                   echo=click.echo, note=_echo_task_notes, progress=not no_progress)


# ----------------------------------------------------------------------------- evaluate

@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--cache", "cache_path", default=None, type=click.Path(dir_okay=False),
              help="the run's cache, if it moved (its cache id must match).")
@click.option("--cache-root", default="cache", show_default=True,
              help="where to look for the run's cache when it is not where it was (also beside the run).")
@click.option("--device", default="auto", show_default=True)
@click.option("--results", default="results", show_default=True, help="folder of results.jsonl.")
@_with(_calibration_options)
def evaluate(run, cache_path, cache_root, device, results, calibration, coverage, conformal, conformal_score) -> None:
    """Score a saved run on the test split of its cache (accuracy, and ECE, NLL and Brier score before and
    after calibration; with --coverage, the conformal sets' coverage and mean size); append one record per seed."""
    from clipbridge.evaluate.fitting.conformal_sets import check_conformal
    from clipbridge.evaluate.fitting.runner import evaluate_run

    if coverage is not None:
        check_conformal(coverage, conformal_score, conformal)
    writable_dir(results, "--results")
    evaluate_run(Path(run), cache_path=cache_path, device=device, results_dir=results, echo=click.echo,
                 note=_echo_task_notes, cache_root=cache_root, calibration=calibration, coverage=coverage,
                 conformal=conformal, conformal_score=conformal_score)


# ----------------------------------------------------------------------------- predict

@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True)
@click.option("--topk", default=5, show_default=True, type=click.IntRange(1, None), help="classes per image.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="write the predictions to a .csv or .jsonl file (default: print them).")
@click.option("--seed", default=None, type=int, help="which seed's fit to use (default: the run's first).")
@click.option("--pretrained", default=None,
              help="the weights file, when it is no longer where the run's cache was extracted from (its "
                   "SHA-256 must be the cache's).")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, None))
@_with(_calibration_options)
@click.option("--cache", "cache_path", default=None, type=click.Path(dir_okay=False),
              help="--coverage: the run's cache, if it moved (its held-out labelled images calibrate the sets).")
@click.option("--cache-root", default="cache", show_default=True,
              help="--coverage: where to look for the run's cache when it is not where it was.")
@click.option("--skip-unreadable", is_flag=True,
              help="classify the readable images and list the unreadable ones (an error column; a count on "
                   "stderr) instead of stopping at the first.")
def predict(run, images, topk, out, seed, pretrained, device, batch_size, calibration, coverage, conformal,
            conformal_score, cache_path, cache_root, skip_unreadable) -> None:
    """Classify IMAGES (files or folders, read recursively) with the fitted RUN: its model and weights encode
    them, its method scores them; prints (or writes to --out) the top-k classes and their calibrated
    probabilities per image, and with --coverage the conformal prediction set."""
    from clipbridge.evaluate.fitting.api import load_run
    from clipbridge.evaluate.fitting.conformal_sets import check_conformal
    from clipbridge.evaluate.fitting.predict import image_files, write_predictions

    if out is not None and Path(out).suffix.lower() not in (".csv", ".jsonl"):
        raise ClipBridgeError(f"--out {out}: use a .csv or .jsonl file")
    if out is not None:
        writable_dir(Path(out).parent, "--out")  # before any image is encoded
    if coverage is not None:
        check_conformal(coverage, conformal_score, conformal)
    image_files(images)                         # every path exists, before the model is loaded
    fitted = load_run(run)
    from clipbridge.evaluate.fitting.predict import predict_images

    cache = fitted.open_cache(cache_path, cache_root=cache_root) if coverage is not None else None
    predictions = predict_images(fitted, images, topk=topk, seed=seed, pretrained=pretrained, device=device,
                                 batch_size=batch_size, calibration=calibration, coverage=coverage,
                                 conformal_score=conformal_score, conformal=conformal, cache=cache,
                                 skip_unreadable=skip_unreadable, note=lambda text: click.echo(text, err=True))
    skipped = [p for p in predictions if p.error is not None]
    if skipped:
        click.echo(f"skipped {len(skipped)} unreadable image(s) (listed with their error): "
                   + ", ".join(p.path for p in skipped[:3]) + (" ..." if len(skipped) > 3 else ""), err=True)
    if out is not None:
        click.echo(f"predictions of {len(predictions)} image(s): {write_predictions(predictions, Path(out))}")
        return
    for p in predictions:
        if p.error is not None:
            click.echo(f"{p.path}\terror: {p.error}")
            continue
        members = "" if p.prediction_set is None else f"\tset: {{{', '.join(p.prediction_set)}}}"
        click.echo(f"{p.path}\t" + "\t".join(f"{c} {q:.4f}" for c, q in zip(p.classes, p.probabilities)) + members)


# ----------------------------------------------------------------------------- bench

@click.command()
@click.option("--dataset", "datasets", default=None, help="datasets (names or cache files), comma-separated "
              "(default: the only cache under --cache-root, of the --model/--pretrained given).")
@click.option("--cache", "cache_paths", default=None, help="cache files, comma-separated (instead of --dataset).")
@click.option("--methods", default="all", show_default=True,
              help="'all' or a comma-separated list of: " + ", ".join(METHOD_NAMES) + ".")
@click.option("--shots", default="1,2,4,8,16", show_default=True)
@click.option("--seeds", default="1-10", show_default=True)
@_with(_cache_options)
@_with(_fit_options)
@click.option("--ood", default=None, help="distribution-shift datasets (test-only caches) to score on.")
@click.option("--name", default=None, help="results/<name>/ for the tables (default: the dataset names).")
@click.option("--hparam", "hparam_items", multiple=True, metavar="METHOD.KEY=VALUE",
              help="a hyper-parameter for one method's fit, e.g. semobridge-t.steps=1000 (repeatable).")
@click.option("--sweep", "sweep_text", default=None, metavar="METHOD.KEY=V1,V2,...|prompts=SET,SET+SET,...",
              help="run the grid at each value of one method's hyper-parameter (that method only) or of the "
                   "prompt sets ('+' joins sets), then write a sensitivity table and plot.")
@click.option("--no-progress", is_flag=True, help="no progress bars (none are drawn off a terminal).")
def bench(datasets, cache_paths, methods, shots, seeds, model, pretrained, cache_root, recipe_name, view_families,
          prompts, protocol, device, dtype, precision, results, ood, name, hparam_items, sweep_text,
          no_progress) -> None:
    """Run the grid datasets × methods × shots × seeds (resumable) and build tables and a plot."""
    from clipbridge.evaluate.bench.grid import BenchSpec, run_bench
    from clipbridge.evaluate.bench.distributed import launched_by_torchrun

    from clipbridge.cache.names import check_name

    if name is not None:
        check_name(name, "--name")
    method_list = method_names(methods)
    per_method = method_hparams(hparam_items, method_list)
    shot_list, seed_list = parse_int_list(shots, "--shots"), parse_int_list(seeds, "--seeds")
    writable_dir(results, "--results")
    if datasets and cache_paths:
        raise ClipBridgeError("give --dataset NAMES or --cache PATHS, not both")
    if cache_paths:
        caches = tuple(Path(p) for p in parse_names(cache_paths) or [])
    elif datasets:
        caches = tuple(resolve_cache(e, model, pretrained, cache_root) for e in parse_names(datasets) or [])
    else:
        caches = (resolve_cache(None, model, pretrained, cache_root),)
    targets = tuple(resolve_cache(e, model, pretrained, cache_root) for e in parse_names(ood) or [])
    spec = BenchSpec(caches=caches, methods=tuple(method_list), hparams=per_method,
                     shots=tuple(shot_list), seeds=tuple(seed_list),
                     protocol=protocol, recipe=recipe_name,
                     view_families=tuple(parse_names(view_families) or ()) or None,
                     prompt_sets=tuple(parse_names(prompts) or ()) or None,
                     device=device, dtype=dtype, precision=precision, ood=targets, model=model,
                     pretrained=pretrained)
    if targets and protocol == "paper":
        click.echo("note: OOD test sets are only scored, never tuned on", err=True)
    if sweep_text:
        _bench_sweep(spec, sweep_text, results, name, no_progress)
        return
    name = name or "_".join(Path(c).stem for c in caches)
    outcome = run_bench(spec, results, name, progress=not no_progress,
                        echo=lambda text: click.echo(text, err=True))
    if launched_by_torchrun() and not outcome.outputs:
        return
    where = f" (rank 0 of {outcome.world_size})" if outcome.world_size > 1 else ""
    click.echo(f"cells fitted{where}: {outcome.fitted_cells}, already done: {outcome.skipped_cells}, "
               f"records written: {outcome.records_written}")
    for dataset in outcome.val_is_test:
        click.echo(f"warning: VAL = TEST on {dataset} (protocol paper without a val split)", err=True)
    click.echo(outcome.markdown, nl=False)
    for kind, path in outcome.outputs.items():
        click.echo(f"{kind}: {path}")


def _bench_sweep(spec, sweep_text: str, results: str, name: str | None, no_progress: bool) -> None:
    from clipbridge.evaluate.bench.sweep import parse_sweep, run_sweep

    sweep = parse_sweep(sweep_text, spec.methods)
    name = name or "_".join(Path(c).stem for c in spec.caches) + f"-sweep-{sweep.name}"
    outcome = run_sweep(spec, sweep, results, name, progress=not no_progress,
                        echo=lambda text: click.echo(text, err=True))
    if not outcome.outputs:  # a torchrun rank other than 0
        return
    click.echo(f"cells fitted: {outcome.fitted_cells}, already done: {outcome.skipped_cells}, "
               f"records written: {outcome.records_written}")
    click.echo(outcome.markdown, nl=False)
    for kind, path in outcome.outputs.items():
        click.echo(f"{kind}: {path}")


# ----------------------------------------------------------------------------- demo

@click.command()
@click.option("--quick", is_flag=True, help="the reduced demo of the end-to-end test: fewer images, shots 1,16 x 2 seeds, shorter training.")
@click.option("--out", default="demo", show_default=True, help="folder for the demo's cache, runs and results.")
@click.option("--device", default="auto", show_default=True)
def demo(quick, out, device) -> None:
    """Everything end to end, offline: a cache of the embedded default, then a small benchmark."""
    from clipbridge.evaluate.bench.demo import run_demo

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        run_demo(Path(out), quick=quick, device=device, echo=click.echo)
