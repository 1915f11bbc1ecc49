"""`python cli.py extract`: encode a dataset's images and prompts once into an HDF5 cache."""
from __future__ import annotations

import os
from pathlib import Path

import click

from clipbridge.cache.errors import ClipBridgeError
from clipbridge.cache.schema import default_cache_path, tmp_path


def _check_writable(out: Path, overwrite: bool) -> None:
    """Fail fast (before loading any model) when the cache cannot be written or already exists."""
    if out.exists() and not overwrite:
        raise ClipBridgeError(f"{out} already exists; delete it or pass --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ClipBridgeError(f"cannot create the output folder {out.parent} ({error.strerror or error})") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ClipBridgeError(f"cannot write the cache to {out.parent} (permission denied)")
    if tmp_path(out).exists() and not os.access(tmp_path(out), os.R_OK | os.W_OK):
        raise ClipBridgeError(f"cannot resume {tmp_path(out)} (permission denied)")


def _prompt_set_names(prompts: str | None, cupl: Path | None, templates: Path | None) -> list[str]:
    """--prompts as a list; by default ensemble, plus cupl / templates when their files are given."""
    if prompts:
        names = [name.strip() for name in prompts.split(",") if name.strip()]
    else:
        names = ["ensemble"] + (["cupl"] if cupl else []) + (["templates"] if templates else [])
    if len(set(names)) != len(names):
        raise ClipBridgeError(f"--prompts lists a set twice: {prompts}")
    return names


@click.command("extract")
@click.option("--dataset", help="Dataset name (see --list-datasets).")
@click.option("--root", default="data", show_default=True, type=click.Path(path_type=Path),
              help="Folder holding the datasets (CoOp layout), or the image root for imagefolder/splitfile.")
@click.option("--model", default="ViT-B-16", show_default=True, help="open_clip model name (see --list-models).")
@click.option("--pretrained", default="openai", show_default=True,
              help="open_clip tag, a checkpoint file (.pt/.bin/.safetensors), or 'random'.")
@click.option("--prompts", default=None, help="Comma-separated prompt sets: classname, coop, ensemble, cupl, "
              "templates. [default: ensemble, plus cupl/templates when --cupl/--templates are given]")
@click.option("--cupl", type=click.Path(path_type=Path), default=None, help="CuPL JSON {classname: [sentences]}.")
@click.option("--templates", type=click.Path(path_type=Path), default=None,
              help="Text file with one template per line, '{}' for the class name.")
@click.option("--views", default=1, show_default=True, type=click.IntRange(1, None),
              help="Views per train/val image: 0 plain, 1 mirrored, then random crops (test: plain only).")
@click.option("--split-file", type=click.Path(path_type=Path), default=None,
              help="CoOp-format split JSON overriding the dataset's own.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16"]))
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, None), help="Images per batch.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(0, None),
              help="DataLoader worker processes decoding images.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random views.")
@click.option("--skip-bad", is_flag=True, help="Leave unreadable images out (counted in the cache) instead of stopping.")
@click.option("--download", is_flag=True, help="Fetch the dataset through torchvision when it is not under --root.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Cache file [default: <cache-root>/<model>--<pretrained>/<dataset>.h5].")
@click.option("--cache-root", default="cache", show_default=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing finished cache.")
@click.option("--restart", is_flag=True, help="Discard an unfinished cache instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--list-models", is_flag=True, help="Print open_clip model names and pretrained tags, then exit.")
@click.option("--list-datasets", is_flag=True, help="Print dataset names, then exit.")
def extract(dataset, root, model, pretrained, prompts, cupl, templates, views, split_file, device, precision,
            batch_size, workers, seed, skip_bad, download, out, cache_root, overwrite, restart, no_progress,
            list_models, list_datasets) -> None:
    """Encode a dataset's images (V views) and prompts with an open_clip model into an HDF5 cache.

    Interrupted runs resume when the same command is run again. Under `torchrun --nproc_per_node N` the
    ranks share the images and rank 0 writes the same cache a single process would.
    """
    from clipbridge.extract.datasets import get_dataset, list_datasets as dataset_names

    if list_datasets:
        click.echo("\n".join(dataset_names()))
        return
    if list_models:
        from clipbridge.extract.models import describe_models

        click.echo("\n".join(describe_models()))
        return
    if not dataset:
        raise ClipBridgeError("extract needs --dataset NAME (see --list-datasets)")
    from clipbridge.extract.prompts import build_prompt_sets

    spec = get_dataset(dataset, root, split_file=split_file, download=download)
    prompt_sets = build_prompt_sets(_prompt_set_names(prompts, cupl, templates), spec.name, spec.classnames,
                                    cupl=cupl, templates=templates)
    out = out or default_cache_path(model, pretrained or "random", spec.name, root=cache_root)

    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 writes
        _check_writable(out, overwrite)

    from clipbridge.extract.distributed import init_distributed
    from clipbridge.extract.models import load_model
    from clipbridge.extract.run import ExtractOptions, run_extraction

    ctx = init_distributed(device)
    try:
        loaded = load_model(model, pretrained, device=ctx.device, precision=precision)
        options = ExtractOptions(views=views, batch_size=batch_size, workers=workers, seed=seed, skip_bad=skip_bad,
                                 progress=not no_progress, overwrite=overwrite, restart=restart)
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
