"""Extraction speed: images/s and where the time goes, and what encoding only the sampled images saves.

    python -m clipbridge.extract.speed stages --images DIR_OF_JPEGS --model clipbridge-tiny \\
        --pretrained random --limit 256 --families plain,tip --workers 0,2
    python -m clipbridge.extract.speed sampled --images DIR_OF_JPEGS --classes 1000 \\
        --per-class 1281 --shots 1,2,4,8,16 --seeds 1-3 --families tip

`stages`, per DataLoader worker count, with the same dataset, view and encode code as `extract` (an image =
one source image with all the views of the families asked for):
  decode    : iterating the DataLoader alone (JPEG decode, views, collate; workers in parallel)
  model     : encode_image on batches already in memory (CUDA: synchronised)
  pipeline  : both together, as extraction runs them

`sampled` writes an ImageNet-sized CoOp split file (classes x per-class train images, test-per-class test
images, no val split, like ImageNet) whose entries point at the real JPEGs of --images (repeated), extracts
it with --shots/--seeds as `extract` does (clean protocol: held-out validation images from train, plain
view), and prints the images encoded per split against the whole split, the wall time, and the time the
whole train split would take at the measured rate.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from clipbridge.cache.options import parse_int_list, parse_names
from clipbridge.extract.datasets.coop import list_images
from clipbridge.extract.datasets.registry import DatasetSpec
from clipbridge.extract.models import load_model
from clipbridge.extract.plan import SplitPlan
from clipbridge.extract.run import ImageRows, collate_rows, encode_images
from clipbridge.extract.views import ViewMaker, get_family


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loader(spec: DatasetSpec, loaded, families: list[str], batch_size: int, workers: int) -> DataLoader:
    n = len(spec.splits["train"])
    rows = np.arange(n)
    plan = SplitPlan(np.zeros(n, np.int64), "", rows, np.zeros(n, np.int64),
                     [spec.item_name(item) for item, _ in spec.splits["train"]], {f: rows for f in families})
    maker = ViewMaker(loaded.preprocess, loaded.image_size, loaded.mean, loaded.std)
    pending = {row: tuple(families) for row in range(n)}
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return DataLoader(ImageRows(spec, "train", plan, maker, pending), batch_sampler=batches, num_workers=workers,
                      collate_fn=collate_rows, pin_memory=loaded.device.type == "cuda")


def _encode(loaded, by_family: dict, batch_size: int) -> None:
    for _, views in by_family.values():
        encode_images(loaded, views, batch_size)


def measure(spec: DatasetSpec, loaded, families: list[str], batch_size: int, workers: int) -> dict[str, float]:
    """Seconds for decode only, model only and the full pipeline over spec's images (one pass each)."""
    start = time.perf_counter()
    batches = [by_family for by_family, _ in _loader(spec, loaded, families, batch_size, workers)]
    decode = time.perf_counter() - start

    _encode(loaded, batches[0], batch_size)  # warm-up (kernels, allocator)
    _sync(loaded.device)
    start = time.perf_counter()
    for by_family in batches:
        _encode(loaded, by_family, batch_size)
    _sync(loaded.device)
    model = time.perf_counter() - start

    start = time.perf_counter()
    for by_family, _ in _loader(spec, loaded, families, batch_size, workers):
        _encode(loaded, by_family, batch_size)
    _sync(loaded.device)
    pipeline = time.perf_counter() - start
    views = sum(get_family(f).copies for f in families)
    return {"images": len(spec.splits["train"]), "views": views, "decode": decode, "model": model,
            "pipeline": pipeline}


def stages(args: argparse.Namespace) -> None:
    loaded = load_model(args.model, args.pretrained, device=args.device, precision=args.precision)
    files = [str(p) for p in list_images(args.images)[: args.limit]]
    spec = DatasetSpec("speed", ["x"], ["x"], {"train": [(f, 0) for f in files]}, "speed", root=args.images)
    families = parse_names(args.families) or ["plain"]
    print(f"model {args.model} ({loaded.pretrained_id}, {args.precision}) on {loaded.device}, "
          f"torch threads {torch.get_num_threads()}, {len(files)} JPEGs from {args.images}, families "
          f"{','.join(families)} ({sum(get_family(f).copies for f in families)} views per image), batch {args.batch_size}")
    print(f"{'workers':>7}  {'decode img/s':>12}  {'model img/s':>11}  {'pipeline img/s':>14}  "
          f"{'pipeline / slower stage':>23}")
    for workers in [int(w) for w in args.workers.split(",")]:
        r = measure(spec, loaded, families, args.batch_size, workers)
        n = r["images"]
        slower = max(r["decode"], r["model"])
        print(f"{workers:>7}  {n / r['decode']:>12.1f}  {n / r['model']:>11.1f}  {n / r['pipeline']:>14.1f}  "
              f"{slower / r['pipeline']:>22.0%}")


def write_imagenet_like_split(path: Path, images: Path, classes: int, per_class: int, test_per_class: int) -> int:
    """A CoOp split file with classes x per_class train and classes x test_per_class test entries pointing
    (round robin) at the JPEGs of `images`; returns the number of distinct files used."""
    files = [p.name for p in list_images(images)]
    counter = iter(range(1 << 62))

    def entries(per: int) -> list:
        return [[files[next(counter) % len(files)], label, f"class {label}"] for label in range(classes)
                for _ in range(per)]

    path.write_text(json.dumps({"train": entries(per_class), "test": entries(test_per_class)}))
    return len(files)


def sampled(args: argparse.Namespace) -> None:
    from clipbridge.cache.coverage import Coverage, plan_rows
    from clipbridge.extract.datasets import get_dataset
    from clipbridge.extract.prompts import build_prompt_sets
    from clipbridge.extract.run import ExtractOptions, run_extraction

    shots, seeds = parse_int_list(args.shots, "--shots"), parse_int_list(args.seeds, "--seeds")
    families = tuple(parse_names(args.families) or ["tip"])
    views = 1 + sum(get_family(f).copies for f in families)
    with tempfile.TemporaryDirectory() as folder:
        split_file = Path(folder) / "split_imagenet_like.json"
        started = time.perf_counter()
        distinct = write_imagenet_like_split(split_file, args.images, args.classes, args.per_class,
                                             args.test_per_class)
        spec = get_dataset("splitfile", args.images, split_file=split_file)
        listing = time.perf_counter() - started
        coverage = Coverage.sampled([(k, s) for k in shots for s in seeds], whole_val=False)
        plans = plan_rows({split: [label for _, label in items] for split, items in spec.splits.items()}, coverage)
        whole = {split: len(items) for split, items in spec.splits.items()}
        print(f"split file: {args.classes} classes x {args.per_class} train, x {args.test_per_class} test "
              f"({sum(whole.values())} entries on {distinct} real JPEGs), written and read in {listing:.1f} s")
        print(f"coverage: shots {args.shots} x seeds {args.seeds}, families plain + {', '.join(families)} "
              f"({views} views per support image)")
        train = plans["train"]
        print(f"train: {train.support.size} support images ({train.support.size * views} views) + "
              f"{train.rows.size - train.support.size} held-out validation images (plain) of {whole['train']}: "
              f"{whole['train'] / train.rows.size:.1f}x fewer images, "
              f"{whole['train'] * views / (train.support.size * views + train.rows.size - train.support.size):.1f}x "
              f"fewer views than the whole train split with the same families")
        loaded = load_model(args.model, args.pretrained, device=args.device, precision=args.precision)
        prompt_sets = build_prompt_sets(["classname"], spec.name, spec.classnames)
        options = ExtractOptions(families=families, coverage=coverage, batch_size=args.batch_size,
                                 workers=args.workers, progress=False)
        started = time.perf_counter()
        summary = run_extraction(spec, loaded, prompt_sets, Path(folder) / "cache.h5", options)
        seconds = time.perf_counter() - started
        test_images = whole["test"]
        print("\n".join(summary.lines()))
        rate = summary.encoded / seconds
        train_seconds = seconds * (summary.views - test_images) / max(summary.views, 1)
        whole_estimate = train_seconds * whole["train"] * views / max(summary.views - test_images, 1)
        print(f"extract wall time {seconds:.1f} s ({rate:.0f} images/s overall); the train part ~{train_seconds:.0f} s; "
              f"the whole train split with the same families would take ~{whole_estimate / 3600:.1f} h at that "
              f"rate (estimated from views/s, not run)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clipbridge.extract.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("stages", "sampled"):
        sub = commands.add_parser(name)
        sub.add_argument("--images", type=Path, required=True, help="Folder of JPEGs.")
        sub.add_argument("--model", default="clipbridge-tiny")
        sub.add_argument("--pretrained", default="random")
        sub.add_argument("--device", default="auto")
        sub.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
        sub.add_argument("--batch-size", type=int, default=64)
        sub.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    commands.choices["stages"].add_argument("--limit", type=int, default=256, help="Number of images.")
    commands.choices["stages"].add_argument("--families", default="plain", help="View families, comma-separated.")
    commands.choices["stages"].add_argument("--workers", default="0,2", help="DataLoader worker counts.")
    sampled_parser = commands.choices["sampled"]
    sampled_parser.add_argument("--classes", type=int, default=1000)
    sampled_parser.add_argument("--per-class", type=int, default=1281)
    sampled_parser.add_argument("--test-per-class", type=int, default=50)
    sampled_parser.add_argument("--shots", default="1,2,4,8,16")
    sampled_parser.add_argument("--seeds", default="1-3")
    sampled_parser.add_argument("--families", default="tip", help="Augmented families of the support images.")
    sampled_parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    (stages if args.command == "stages" else sampled)(args)


if __name__ == "__main__":
    main()
