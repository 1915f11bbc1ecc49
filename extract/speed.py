"""Extraction speed: images/s and where the time goes (JPEG decode + preprocess vs the model).

    python -m clipbridge.extract.speed --images /work/shared/data/flowers17/jpg --model clipbridge-tiny \
        --pretrained random --limit 256 --batch-size 32 --workers 0,2

Three figures per worker count, using the same DataLoader and encode path as `extract`:
  decode    : iterating the DataLoader alone (JPEG decode, views, collate; workers in parallel)
  model     : encode_image on batches already in memory (CUDA: synchronised)
  pipeline  : both together, as extraction runs them
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from clipbridge.extract.datasets.coop import list_images
from clipbridge.extract.datasets.registry import DatasetSpec
from clipbridge.extract.models import load_model
from clipbridge.extract.run import ImageRows, collate_rows, encode_images
from clipbridge.extract.views import ViewRecipe


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loader(spec: DatasetSpec, loaded, recipe: ViewRecipe, batch_size: int, workers: int) -> DataLoader:
    rows = list(range(len(spec.splits["train"])))
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    return DataLoader(ImageRows(spec, "train", loaded.preprocess, recipe), batch_sampler=batches,
                      num_workers=workers, collate_fn=collate_rows, pin_memory=loaded.device.type == "cuda")


def measure(spec: DatasetSpec, loaded, recipe: ViewRecipe, batch_size: int, workers: int) -> dict[str, float]:
    """Seconds for decode only, model only and the full pipeline over spec's images (one pass each)."""
    count = len(spec.splits["train"]) * recipe.views
    start = time.perf_counter()
    batches = [views for _, views, _ in _loader(spec, loaded, recipe, batch_size, workers)]
    decode = time.perf_counter() - start

    encode_images(loaded, batches[0])  # warm-up (kernels, allocator)
    _sync(loaded.device)
    start = time.perf_counter()
    for views in batches:
        encode_images(loaded, views)
    _sync(loaded.device)
    model = time.perf_counter() - start

    start = time.perf_counter()
    for _, views, _ in _loader(spec, loaded, recipe, batch_size, workers):
        encode_images(loaded, views)
    _sync(loaded.device)
    pipeline = time.perf_counter() - start
    return {"images": count, "decode": decode, "model": model, "pipeline": pipeline}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="Folder of JPEGs.")
    parser.add_argument("--model", default="clipbridge-tiny")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--limit", type=int, default=256, help="Number of images.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--workers", default="0,2", help="Comma-separated DataLoader worker counts.")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model, args.pretrained, device=args.device, precision=args.precision)
    files = [str(p) for p in list_images(args.images)[: args.limit]]
    spec = DatasetSpec("speed", ["x"], ["x"], {"train": [(f, 0) for f in files]}, "speed", root=args.images)
    recipe = ViewRecipe(views=args.views, seed=0, size=loaded.image_size, mean=loaded.mean, std=loaded.std)
    print(f"model {args.model} ({loaded.pretrained_id}, {args.precision}) on {loaded.device}, "
          f"torch threads {torch.get_num_threads()}, {len(files)} JPEGs x {args.views} views from {args.images}, "
          f"batch {args.batch_size}")
    print(f"{'workers':>7}  {'decode img/s':>12}  {'model img/s':>11}  {'pipeline img/s':>14}  "
          f"{'decode share':>12}")
    for workers in [int(w) for w in args.workers.split(",")]:
        result = measure(spec, loaded, recipe, args.batch_size, workers)
        n = result["images"]
        share = result["decode"] / (result["decode"] + result["model"])
        print(f"{workers:>7}  {n / result['decode']:>12.1f}  {n / result['model']:>11.1f}  "
              f"{n / result['pipeline']:>14.1f}  {share:>11.0%}")


if __name__ == "__main__":
    main()
