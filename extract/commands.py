"""`python cli.py extract`: encode a dataset's images and prompts once into an HDF5 cache."""
from __future__ import annotations

import os
from pathlib import Path

import click

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.schema import tmp_path

DEFAULT_SHOTS, DEFAULT_SEEDS = "1,2,4,8,16", "1-3"


def default_workers(most: int = 8) -> int:
    """The CPUs this process may run on (its affinity, else the machine's), at most `most`."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:                     # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(most, available))


def _check_writable(out: Path) -> None:
    """Fail fast (before loading any model) when the cache cannot be written."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ClipBridgeError(f"cannot create the output folder {out.parent} ({error.strerror or error})") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ClipBridgeError(f"cannot write the cache to {out.parent} (permission denied)")
    if tmp_path(out).exists() and not os.access(tmp_path(out), os.R_OK | os.W_OK):
        raise ClipBridgeError(f"cannot resume {tmp_path(out)} (permission denied)")


def _prompt_set_names(prompts: str | None, cupl: dict[str, Path], templates: Path | None) -> list[str]:
    """--prompts as a list; by default coop and ensemble, plus every --cupl set and templates when their
    files are given."""
    if prompts:
        names = [name.strip() for name in prompts.split(",") if name.strip()]
    else:
        names = ["coop", "ensemble"] + list(cupl) + (["templates"] if templates else [])
    if len(set(names)) != len(names):
        raise ClipBridgeError(f"--prompts lists a set twice: {prompts}")
    return names


def _families(text: str | None, dataset: str, coverage) -> tuple[str, ...]:
    """--view-families as a tuple of known family names ('recipes' expanded for the dataset and shots from
    the recipe table, bridge/recipes, a stage below this one). Without --view-families: 'recipes' at the
    shots stored (every image: DEFAULT_SHOTS), so the default `fit` (recipe paper) of every method finds
    the views its recipe asks for."""
    from clipbridge.bridge.recipes import recipe_families
    from clipbridge.cache.options import parse_names
    from clipbridge.extract.views import get_family

    names = parse_names(text) or ["recipes"]
    shots = sorted({k for k, _ in coverage.pairs}) if coverage.pairs else parse_names(DEFAULT_SHOTS)
    families: list[str] = []
    for name in names:
        families += recipe_families(dataset, [int(k) for k in shots]) if name == "recipes" else [name]
    for name in families:
        get_family(name)
    return tuple(dict.fromkeys(families))


def default_families_note(families: tuple[str, ...], coverage) -> str:
    """What the default view families cost, said before encoding: the augmented views each stored train
    image gets besides its plain view, and how to store the plain view only."""
    from clipbridge.extract.views import PLAIN, get_family

    augmented = [(name, get_family(name).copies) for name in families if name != PLAIN]
    if not augmented:
        return "view families: plain only (the paper recipes of this dataset use no augmented views)"
    which = "every train image" if coverage.is_everything else "each sampled train image"
    listed = ", ".join(f"{name} {copies}" for name, copies in augmented)
    views = 1 + sum(copies for _, copies in augmented)
    return (f"view families: the paper recipes' ({listed} views) on {which}: {views} views instead of 1, so "
            f"the default fit of every method runs; --view-families plain stores the plain view only")


def coverage_from_options(shots: str | None, seeds: str | None, protocols: str):
    """--shots/--seeds/--protocols -> cache.coverage.Coverage (every image when neither is given)."""
    from clipbridge.cache.coverage import Coverage
    from clipbridge.cache.options import PROTOCOLS, parse_int_list, parse_names

    wanted = parse_names(protocols) or []
    unknown = [p for p in wanted if p not in PROTOCOLS]
    if unknown or not wanted:
        raise ClipBridgeError(f"--protocols {protocols!r}: use clean, paper or clean,paper")
    if shots is None and seeds is None:
        return Coverage.everything()
    shot_list = parse_int_list(DEFAULT_SHOTS if shots is None else shots, "--shots")
    seed_list = parse_int_list(DEFAULT_SEEDS if seeds is None else seeds, "--seeds")
    if min(shot_list) < 1:
        raise ClipBridgeError(f"--shots {shots!r}: shots must be at least 1")
    return Coverage.sampled([(k, s) for k in shot_list for s in seed_list], whole_val="paper" in wanted)


@click.command("extract")
@click.option("--dataset", help="Dataset name (see --list-datasets).")
@click.option("--root", default="data", show_default=True, type=click.Path(path_type=Path),
              help="Folder holding the datasets (CoOp layout), or the image root for imagefolder/splitfile.")
@click.option("--model", default="ViT-B-16", show_default=True, help="open_clip model name (see --list-models).")
@click.option("--pretrained", default=None,
              help="open_clip tag, a checkpoint file (.pt/.bin/.safetensors), or 'random'. [default: openai when the "
                   "model has it, else its bundled or first tag (clipbridge-tiny: shapes)]")
@click.option("--prompts", default=None, help="Comma-separated prompt sets: classname, coop, ensemble, cupl (every "
              "--cupl file), cupl:NAME, templates. [default: coop,ensemble, plus each --cupl set and templates "
              "when --cupl/--templates are given]")
@click.option("--cupl", multiple=True, metavar="NAME=FILE",
              help="CuPL JSON {classname: [sentences]}, stored as text set cupl:NAME; repeatable. The paper "
                   "recipes need APE's file as ape=... (gpt3_prompts/CuPL_prompts_<dataset>.json) and "
                   "SeMoBridge's as semobridge=... (TEXTS/<dataset>/cupl_full.json). A bare FILE is set 'cupl'. "
                   "Run again on an existing cache to add a set: its images are copied, not encoded again.")
@click.option("--templates", type=click.Path(path_type=Path), default=None,
              help="Text file with one template per line, '{}' for the class name.")
@click.option("--name", default=None, help="Name of an imagefolder/splitfile dataset (default: its image folder's "
              "name, or that folder's parent's for images/, jpg/, ...). Paper recipes apply to the CoOp names "
              "(e.g. --name dtd).")
@click.option("--view-families", default=None,
              help="View families of the few-shot (train) images, comma-separated; every stored image also gets "
                   "'plain'; 'recipes' = every family the paper recipes use on this dataset at the --shots given "
                   "(see --list-view-families); 'plain' alone for the minimal cache. [default: recipes, at the "
                   f"--shots given, else at {DEFAULT_SHOTS}, so the default fit of every method runs]")
@click.option("--shots", default=None, help=f"Store only the train images CoOp's sampler picks for these shot "
              f"counts (e.g. {DEFAULT_SHOTS}; with --seeds, default {DEFAULT_SEEDS}). Default: every image.")
@click.option("--seeds", default=None, help=f"Seeds of the sampled images (e.g. {DEFAULT_SEEDS}; with --shots, "
              f"default shots {DEFAULT_SHOTS}).")
@click.option("--protocols", default="clean,paper", show_default=True,
              help="With --shots/--seeds: the validation images to store: clean = the sampled min(K, 4) per "
                   "class only, paper = also the whole val split.")
@click.option("--split-file", type=click.Path(path_type=Path), default=None,
              help="CoOp-format split JSON overriding the dataset's own.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16"]))
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, None), help="Images per batch.")
@click.option("--workers", default=None, type=click.IntRange(0, None),
              help="DataLoader worker processes decoding images. [default: the CPUs this process may use, at most 8]")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random view families.")
@click.option("--skip-bad", is_flag=True, help="Leave unreadable images out (counted in the cache) instead of stopping.")
@click.option("--download", is_flag=True, help="Fetch the dataset through torchvision when it is not under --root.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Cache file [default: <cache-root>/<model>--<pretrained>/<dataset>.h5].")
@click.option("--cache-root", default="cache", show_default=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Extract everything again, replacing an existing cache (without "
              "it, an existing cache is extended with what it lacks).")
@click.option("--restart", is_flag=True, help="Discard an unfinished cache instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--list-models", is_flag=True, help="Print open_clip model names and pretrained tags, then exit.")
@click.option("--list-datasets", is_flag=True, help="Print dataset names, then exit.")
@click.option("--list-view-families", is_flag=True, help="Print the view families and their recipes, then exit.")
def extract(dataset, root, model, pretrained, prompts, cupl, templates, name, view_families, shots, seeds, protocols,
            split_file, device, precision, batch_size, workers, seed, skip_bad, download, out, cache_root,
            overwrite, restart, no_progress, list_models, list_datasets, list_view_families) -> None:
    """Encode a dataset's images (the view families asked for) and prompts with an open_clip model into an
    HDF5 cache.

    With --shots/--seeds only the images CoOp's sampler picks are encoded (plus the validation images the
    protocols need and the whole test split). Run again with more seeds, families or prompt sets to extend
    the cache: only what it lacks is encoded. Interrupted runs resume when the same command is run again.
    Under `torchrun --nproc_per_node N` the ranks share the images and rank 0 writes the same cache a single
    process would.
    """
    from clipbridge.extract.datasets import get_dataset, list_datasets as dataset_names

    if list_datasets:
        click.echo("\n".join(dataset_names()))
        return
    if list_models:
        from clipbridge.extract.models import describe_models

        click.echo("\n".join(describe_models()))
        return
    from clipbridge.extract.views import describe_families

    if list_view_families:
        click.echo("\n".join(describe_families()))
        return
    if not dataset:
        raise ClipBridgeError("extract needs --dataset NAME (see --list-datasets)")
    from clipbridge.extract.prompts import build_prompt_sets, parse_cupl_options

    if name:
        from clipbridge.cache.names import check_name

        check_name(name, "--name")
    cupl = parse_cupl_options(cupl)
    coverage = coverage_from_options(shots, seeds, protocols)
    spec = get_dataset(dataset, root, split_file=split_file, download=download)
    if name:
        if dataset not in ("imagefolder", "splitfile"):
            raise ClipBridgeError(f"--name names an imagefolder or splitfile dataset; {dataset!r} is called {spec.name!r}")
        spec.name = name
    families = _families(view_families, spec.name, coverage)
    prompt_sets = build_prompt_sets(_prompt_set_names(prompts, cupl, templates), spec.name, spec.classnames,
                                    cupl=cupl, templates=templates)
    unused = [name for name in cupl if name not in {s.name for s in prompt_sets}]
    if unused:
        raise ClipBridgeError(f"--cupl gives {', '.join(unused)}, which --prompts {prompts} leaves out; add it there "
                              "or drop the --cupl")
    if pretrained is None:
        from clipbridge.extract.models import default_pretrained

        pretrained = default_pretrained(model)
    if out is None:                  # the folder of these weights' caches, whatever name they were extracted under
        from clipbridge.cache.weights import weights_cache_path
        from clipbridge.extract.bundled import weights_sha256

        out = weights_cache_path(cache_root, model, pretrained, spec.name, weights_sha256(model, pretrained))

    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 writes
        _check_writable(out)

    from clipbridge.extract.distributed import init_distributed
    from clipbridge.extract.models import load_model
    from clipbridge.extract.run import ExtractOptions, run_extraction

    workers = default_workers() if workers is None else workers
    extract_args = {"dataset": dataset, "root": str(root), "split_file": str(split_file) if split_file else None,
                    "name": name, "model": model, "pretrained": pretrained, "precision": precision}
    ctx = init_distributed(device)
    try:
        loaded = load_model(model, pretrained, device=ctx.device, precision=precision)
        if view_families is None and ctx.is_main:        # what the default families cost, before encoding
            click.echo(default_families_note(families, coverage), err=True)
        options = ExtractOptions(families=families, coverage=coverage, batch_size=batch_size, workers=workers,
                                 seed=seed, skip_bad=skip_bad, progress=not no_progress, overwrite=overwrite,
                                 restart=restart, extract_args=extract_args)
        summary = run_extraction(spec, loaded, prompt_sets, out, options, ctx)
    finally:
        ctx.close()
    if summary is not None:
        click.echo("\n".join(summary.lines()))
        if not loaded.text_head.has_eos:
            from clipbridge.bridge.registry import methods_needing
            from clipbridge.bridge.task import EOS

            click.echo(f"note: no EOS features stored ({loaded.text_head.note}); {', '.join(methods_needing(EOS))} "
                       "cannot run on this cache, every other method can")
