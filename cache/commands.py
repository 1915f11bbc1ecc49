"""Commands of the cache stage: `info CACHE` (what a cache holds) and `fewshot` (CoOp's indices as JSON)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import h5py
import numpy as np

from clipbridge.cache.coverage import Coverage
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.fewshot import check_shot_count, coop_fewshot_indices, read_split_file
from clipbridge.cache.schema import FAMILY_MANAGED_ATTRS, FORMAT, open_hdf5, read_attrs, text_head_attrs, tmp_path


def cache_summary(path: str | Path) -> dict[str, Any]:
    """What a cache file holds, read without validation (works on an unfinished .tmp too).

    {"path", "attrs", "model": {has_eos, has_projection_bias, text_pooling, projection_kind, eos_note,
    text_projection_shape, logit_bias}, "classes", "coverage", "text_sets": {name: prompts}, "splits": {name:
    {"images", "skipped", "families": {family: {"images", "copies", "done", "bytes", "dtype", "recipe"}}}},
    "complete": bool}
    """
    path = Path(path)
    if not path.exists() and tmp_path(path).exists():
        path = tmp_path(path)
    if not path.is_file():
        raise ClipBridgeError(f"{path}: no such cache file")
    try:
        handle = open_hdf5(path, "r")
    except OSError as error:
        raise ClipBridgeError(f"{path}: cannot be opened as HDF5 ({error})") from None
    with handle:
        attrs = read_attrs(handle)
        if attrs.get("format") != FORMAT:
            raise ClipBridgeError(f"{path}: not a clipbridge cache (format attribute is {attrs.get('format')!r})")
        classes = handle["classes/names"].shape[0] if "classes/names" in handle else 0
        model = _model_summary(handle)
        text_sets = {name: group["prompt"].shape[0] for name, group in handle.get("text", {}).items()
                     if "prompt" in group}
        reader = _split_summary_v1 if attrs.get("version") == 1 else _split_summary
        splits = {name: reader(group) for name, group in handle.get("images", {}).items()}
    complete = attrs.get("complete") is True and all(
        f["done"] == f["images"] for split in splits.values() for f in split["families"].values())
    coverage = Coverage.from_attr(json.loads(attrs["coverage"]) if attrs.get("coverage") else None)
    return {"path": str(path), "attrs": attrs, "model": model, "classes": classes,
            "coverage": coverage.describe(), "text_sets": text_sets, "splits": splits, "complete": complete}


def _family_summary(embedding: h5py.Dataset, done: np.ndarray, recipe: dict[str, Any]) -> dict[str, Any]:
    return {"images": int(embedding.shape[0]), "copies": int(embedding.shape[1]), "done": int(done.sum()),
            "bytes": int(np.prod(embedding.shape)) * embedding.dtype.itemsize, "dtype": embedding.dtype.name,
            "recipe": recipe}


def _split_summary(group: h5py.Group) -> dict[str, Any]:
    """A version-2 split: its images and each view family (image count, copies, storage)."""
    skipped = int(group["skipped"][()].sum()) if "skipped" in group else 0
    families = {}
    for name, views in group.get("views", {}).items():
        if all(part in views for part in ("embedding", "done")):
            recipe = {k: v for k, v in read_attrs(views["done"]).items() if k not in FAMILY_MANAGED_ATTRS}
            families[name] = _family_summary(views["embedding"], views["done"][()], recipe)
    images = int(group["source"].shape[0]) if "source" in group else 0
    return {"images": images, "skipped": skipped, "families": families}


def _split_summary_v1(group: h5py.Group) -> dict[str, Any]:
    """A version-1 split ([N, V, D]): one entry for its whole block of views."""
    if "embedding" not in group or "done" not in group:
        return {"images": 0, "skipped": 0, "families": {}}
    done = group["done"][()]
    skipped = int(group["skipped"][()].sum()) if "skipped" in group else 0
    recipe = {k: v for k, v in read_attrs(group["done"]).items() if k != "skipped_log"}
    return {"images": int(done.size), "skipped": skipped,
            "families": {"views (format 1)": _family_summary(group["embedding"], done, recipe)}}


def _model_summary(handle) -> dict[str, Any]:
    """What the cache holds about the text tower's end (schema.text_head_attrs) and the model's biases."""
    summary = text_head_attrs(handle)
    group = handle.get("model", {})
    summary["text_projection_shape"] = list(group["text_projection"].shape) if "text_projection" in group else None
    summary["logit_bias"] = float(group["logit_bias"][()]) if "logit_bias" in group else None
    return summary


def describe_text_head(model: dict[str, Any]) -> str:
    """One line: whether EOS features are stored, how the text tower pools and projects, the logit bias."""
    if model["has_eos"] and model["text_projection_shape"] is None:
        return "not written yet"
    if model["has_eos"]:
        width, dim = model["text_projection_shape"]
        bias = f" + b [{dim}]" if model["has_projection_bias"] else ""
        how = ", ".join(part for part in (f"pooling {model['text_pooling']}" if model["text_pooling"] else "",
                                          model["projection_kind"]) if part)
        text = f"EOS features stored, Wt [{width}, {dim}]{bias}" + (f" ({how})" if how else "")
    else:
        text = f"no EOS features ({model['eos_note'] or 'not recorded why'}): methods needing them are skipped"
    return text + (f"; logit bias {model['logit_bias']:g}" if model["logit_bias"] is not None else "")


def _status(path: Path, summary: dict[str, Any]) -> str:
    """"complete, valid", the reader's objection, or how much of an unfinished cache is done."""
    if summary["complete"]:
        from clipbridge.cache.reader import open_cache      # imports torch: only when a cache is validated

        try:
            open_cache(path)
        except ClipBridgeError as error:
            return f"INVALID: {error}"
        return "complete, valid"
    families = [f for split in summary["splits"].values() for f in split["families"].values()]
    done = sum(f["done"] for f in families)
    rows = sum(f["images"] for f in families)
    return f"INCOMPLETE: {done}/{rows} image views done; run extract again to resume"


@click.command("info")
@click.argument("cache", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def info(cache: Path, as_json: bool) -> None:
    """Show what CACHE holds: provenance, classes, text sets, splits, and whether it is complete."""
    summary = cache_summary(cache)
    summary["status"] = _status(Path(summary["path"]), summary)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return
    click.echo(f"cache   {summary['path']}")
    click.echo(f"status  {summary['status']}")
    for key in sorted(summary["attrs"]):
        click.echo(f"  {key}: {summary['attrs'][key]}")
    click.echo(f"model   {describe_text_head(summary['model'])}")
    click.echo(f"classes {summary['classes']}")
    click.echo(f"images  {summary['coverage']}")
    for name, count in summary["text_sets"].items():
        click.echo(f"text    {name}: {count} prompts")
    for name, split in summary["splits"].items():
        click.echo(f"split   {name}: {split['images']} images, {split['skipped']} skipped (unreadable)")
        for family, views in split["families"].items():
            progress = "" if views["done"] == views["images"] else f", done {views['done']}/{views['images']}"
            click.echo(f"  views {family}: {views['images']} images x {views['copies']} {views['dtype']}, "
                       f"{_size(views['bytes'])}{progress}")


def _size(count: int) -> str:
    """Bytes as a short human size: 1536 -> '1.5 KiB'."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@click.command("fewshot")
@click.option("--split-file", type=click.Path(path_type=Path), required=True,
              help="CoOp split file (JSON: {train|val|test: [[path, label, classname], ...]})")
@click.option("--shots", type=int, required=True, help="training shots per class (K >= 1)")
@click.option("--seed", type=int, default=1, show_default=True, help="CoOp seed")
def fewshot(split_file: Path, shots: int, seed: int) -> None:
    """Print the rows of the split file's train and val lists CoOp picks, as JSON {"train": [...], "val": [...]}.

    Shots above a class's image count are treated as `fit` treats them: a note names the classes that keep
    all they have; shots above the largest class are refused."""
    if shots < 1:
        raise ClipBridgeError(f"--shots must be at least 1, got {shots}")
    splits = read_split_file(split_file)
    if "train" not in splits:
        raise ClipBridgeError(f"{split_file}: has no 'train' split (splits: {', '.join(splits)})")
    train_labels = [e[1] for e in splits["train"]]
    names: dict[int, str] = {}
    for _, label, name in splits["train"]:
        names.setdefault(label, name)
    classnames = [names.get(c, str(c)) for c in range(max(names) + 1)]
    short = check_shot_count(shots, train_labels, classnames, f"split file {split_file}")
    if short:
        listed = ", ".join(f"{name} ({count})" for name, count in list(short.items())[:5])
        click.echo(f"note: {len(short)} class(es) have fewer than {shots} train images; CoOp keeps all they have: "
                   f"{listed}" + (" ..." if len(short) > 5 else ""), err=True)
    indices = coop_fewshot_indices(train_labels, [e[1] for e in splits.get("val", [])], shots, seed)
    click.echo(json.dumps(indices))
