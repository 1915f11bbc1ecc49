"""`clipbridge analyze`: the modality gap and intra-modal calibration before and after each bridge.

    clipbridge analyze --dataset food101 --shots 16 --seed 1                  # fit the three bridges, analyse
    clipbridge analyze --dataset food101 --run runs/food101/semobridge-t/shots16-seeds1-3-ab12cd34
    clipbridge analyze --cache x.h5 --methods semobridge,cmm --hparam cmm.steps=100 --name quick
"""
from __future__ import annotations

from pathlib import Path

import click

from clipbridge.bridge.recipes import DEFAULT_RECIPE, RECIPE_NAMES
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.options import PROTOCOLS, parse_names
from clipbridge.evaluate.commands.options import method_hparams, method_names, resolve_cache
from clipbridge.evaluate.analysis import DEFAULT_MAX_IMAGES, DEFAULT_MAX_PAIRS, DEFAULT_METHODS
from clipbridge.evaluate.reporting.records import writable_dir


@click.command()
@click.option("--dataset", default=None, help="dataset name (its cache under --cache-root).")
@click.option("--cache", "cache_path", default=None, type=click.Path(dir_okay=False), help="a cache file.")
@click.option("--model", default=None, help="CLIP model of the cache (default: the only one with the dataset).")
@click.option("--pretrained", default=None, help="pretrained tag or checkpoint (default: the only weights with it).")
@click.option("--cache-root", default="cache", show_default=True, help="folder of the caches.")
@click.option("--methods", default=None,
              help=f"bridges to fit on the spot, comma-separated (default {','.join(DEFAULT_METHODS)}; with "
                   "--run, only the runs' methods).")
@click.option("--run", "runs", multiple=True, type=click.Path(file_okay=False),
              help="a saved run (from `fit`) to analyse instead of fitting its method (repeatable).")
@click.option("--shots", default=None, type=int, help="shots per class when fitting (default 16).")
@click.option("--seed", default=1, show_default=True, type=int, help="the few-shot draw (a seed of the runs).")
@click.option("--recipe", "recipe_name", type=click.Choice(RECIPE_NAMES), default=DEFAULT_RECIPE, show_default=True,
              help="the recipe the bridges are fitted with (`clipbridge recipe`).")
@click.option("--view-family", "view_families", default=None,
              help="view families of the support images, comma-separated (default: the recipe's).")
@click.option("--prompts", default=None, help="text sets, comma-separated (default: the recipe's).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=None, help="validation (default clean).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None, help="default float32.")
@click.option("--hparam", "hparam_items", multiple=True, metavar="METHOD.KEY=VALUE",
              help="a hyper-parameter for a bridge fitted on the spot, e.g. semobridge-t.steps=1000 (repeatable).")
@click.option("--max-images", default=DEFAULT_MAX_IMAGES, show_default=True, type=int,
              help="test images analysed at most (a seeded uniform sample beyond).")
@click.option("--max-pairs", default=DEFAULT_MAX_PAIRS, show_default=True, type=int,
              help="same-class and different-class pairs per class at most (a seeded sample beyond).")
@click.option("--save-runs", default=None, type=click.Path(file_okay=False),
              help="also save the bridges fitted on the spot as runs under this folder (reuse with --run).")
@click.option("--out", default="analysis", show_default=True, help="folder of the analyses.")
@click.option("--name", default=None, help="<out>/<name>/ (default <dataset>-<K>shot-seed<S>).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def analyze(dataset, cache_path, model, pretrained, cache_root, methods, runs, shots, seed, recipe_name, view_families,
            prompts, protocol, dtype, hparam_items, max_images, max_pairs, save_runs, out, name, device) -> None:
    """Measure the modality gap and intra-modal calibration of raw and bridged image embeddings; write
    gap.json, gap.md, cosine_hist.png and embedding_map.png."""
    from clipbridge.cache.reader import open_cache
    from clipbridge.evaluate.analysis.analyze import AnalysisSpec, run_analysis
    from clipbridge.evaluate.analysis.report import gap_table
    from clipbridge.evaluate.fitting.runs import load_run

    if dataset is not None and cache_path is not None:
        raise ClipBridgeError("give --dataset NAME or --cache PATH, not both")
    method_list = method_names(methods) if methods else ([] if runs else list(DEFAULT_METHODS))
    per_method = method_hparams(hparam_items, method_list)
    spec = AnalysisSpec(methods=tuple(method_list), runs=tuple(Path(r) for r in runs), shots=shots, seed=seed,
                        recipe=recipe_name, view_families=tuple(parse_names(view_families) or ()) or None,
                        prompt_sets=tuple(parse_names(prompts) or ()) or None, protocol=protocol,
                        device=device, dtype=dtype, hparams=per_method, max_images=max_images, max_pairs=max_pairs,
                        save_runs=Path(save_runs) if save_runs else None)
    if dataset is None and cache_path is None:
        if not runs:
            raise ClipBridgeError("give --dataset NAME, --cache PATH or --run RUN")
        cache_path = load_run(runs[0])[1]["cache"]          # the first run's cache (its id is checked)
    path = Path(cache_path) if cache_path else resolve_cache(dataset, model, pretrained, cache_root)
    writable_dir(out, "--out")
    if save_runs:
        writable_dir(save_runs, "--save-runs")
    cache = open_cache(path, model=model, pretrained=pretrained)
    analysis = run_analysis(spec, cache, Path(out), name, echo=lambda text: click.echo(text, err=True))
    d = analysis.document
    click.echo(f"modality gap of {d['dataset']}, {d['shots']}-shot, seed {d['seed']}: "
               f"{d['images']['analysed']:,} test images")
    click.echo(gap_table(d["representations"]), nl=False)
    for kind, where in analysis.outputs.items():
        click.echo(f"{kind}: {where}")
