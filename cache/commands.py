"""Commands of the cache stage: `info CACHE` (what a cache holds) and `fewshot` (CoOp's indices as JSON)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from clipbridge.cache.errors import ClipBridgeError
from clipbridge.cache.fewshot import coop_fewshot_indices, read_split_file
from clipbridge.cache.schema import FORMAT, open_hdf5, read_attrs, text_head_attrs, tmp_path


def cache_summary(path: str | Path) -> dict[str, Any]:
    """What a cache file holds, read without validation (works on an unfinished .tmp too).

    {"path", "attrs", "model": {has_eos, has_projection_bias, text_pooling, projection_kind, eos_note,
    text_projection_shape, logit_bias}, "classes", "text_sets": {name: prompts}, "splits": {name: {shape,
    dtype, done, skipped, rows}}, "complete": bool}
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
        splits = {}
        for name, group in handle.get("images", {}).items():
            if "embedding" not in group or "done" not in group:
                splits[name] = {"shape": None, "dtype": None, "done": 0, "skipped": 0, "rows": 0}
                continue
            done = group["done"][()]
            skipped = group["skipped"][()] if "skipped" in group else np.zeros_like(done)
            splits[name] = {"shape": list(group["embedding"].shape), "dtype": group["embedding"].dtype.name,
                            "done": int(done.sum()), "skipped": int(skipped.sum()), "rows": int(done.size),
                            "recipe": {k: v for k, v in read_attrs(group["done"]).items()
                                       if k not in ("skipped_log",)}}
    complete = attrs.get("complete") is True and all(s["done"] == s["rows"] for s in splits.values())
    return {"path": str(path), "attrs": attrs, "model": model, "classes": classes, "text_sets": text_sets,
            "splits": splits, "complete": complete}


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
    done = sum(s["done"] for s in summary["splits"].values())
    rows = sum(s["rows"] for s in summary["splits"].values())
    return f"INCOMPLETE: {done}/{rows} image rows done; run extract again to resume"


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
    for name, count in summary["text_sets"].items():
        click.echo(f"text    {name}: {count} prompts")
    for name, split in summary["splits"].items():
        shape = "x".join(map(str, split["shape"])) if split["shape"] else "?"
        click.echo(f"split   {name}: {shape} (N x V x D) {split['dtype']}, done {split['done']}/{split['rows']}, "
                   f"skipped {split['skipped']}")


@click.command("fewshot")
@click.option("--split-file", type=click.Path(path_type=Path), required=True,
              help="CoOp split file (JSON: {train|val|test: [[path, label, classname], ...]})")
@click.option("--shots", type=int, required=True, help="training shots per class (K >= 1)")
@click.option("--seed", type=int, default=1, show_default=True, help="CoOp seed")
def fewshot(split_file: Path, shots: int, seed: int) -> None:
    """Print the rows of the split file's train and val lists CoOp picks, as JSON {"train": [...], "val": [...]}."""
    if shots < 1:
        raise ClipBridgeError(f"--shots must be at least 1, got {shots}")
    splits = read_split_file(split_file)
    if "train" not in splits:
        raise ClipBridgeError(f"{split_file}: has no 'train' split (splits: {', '.join(splits)})")
    indices = coop_fewshot_indices([e[1] for e in splits["train"]], [e[1] for e in splits.get("val", [])],
                                   shots, seed)
    click.echo(json.dumps(indices))
