"""The extraction loop: dataset + model + prompt sets -> one cache file, resumable, torchrun-aware.

Work is cut into fixed batches: batch k of a split holds rows [k*B, (k+1)*B) that are not done yet. A
batch is written (and marked done) as a whole, so a resumed run and a run with N processes encode exactly
the same batches as one uninterrupted process, and on CPU give identical values. Under torchrun, rank r
encodes batches k with k % N == r; each round rank 0 gathers the ranks' results and writes them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipbridge.cache.errors import ClipBridgeError
from clipbridge.cache.schema import tmp_path
from clipbridge.cache.writer import CacheWriter
from clipbridge.extract.datasets.registry import DatasetSpec
from clipbridge.extract.distributed import DistContext
from clipbridge.extract.models import LoadedModel, cache_model_part, encode_text_with_eos
from clipbridge.extract.prompts import PromptSet
from clipbridge.extract.views import ViewRecipe, make_views

READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass
class ExtractOptions:
    """Knobs of one extraction run (see `python cli.py extract --help`)."""

    views: int = 1
    batch_size: int = 256
    workers: int = 0
    seed: int = 0
    skip_bad: bool = False
    progress: bool = True
    overwrite: bool = False
    restart: bool = False
    text_batch_size: int = 256


@dataclass
class ExtractSummary:
    """What a run did: per split (rows, skipped), prompt counts, timing."""

    path: Path
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)
    text_sets: dict[str, int] = field(default_factory=dict)
    encoded: int = 0
    seconds: float = 0.0
    resumed: bool = False

    def lines(self) -> list[str]:
        rate = self.encoded / self.seconds if self.seconds > 0 else 0.0
        out = [f"wrote {self.path}" + (" (resumed)" if self.resumed else "")]
        for split, (rows, skipped) in self.splits.items():
            out.append(f"  {split}: {rows} images" + (f", {skipped} skipped (unreadable)" if skipped else ""))
        out.append("  text: " + ", ".join(f"{name} {count} prompts" for name, count in self.text_sets.items()))
        out.append(f"  encoded {self.encoded} images in {self.seconds:.1f} s ({rate:.1f} images/s)")
        return out


class ImageRows(Dataset):
    """Row i of a split -> (i, views [V, 3, H, W] or None, error text or None)."""

    def __init__(self, spec: DatasetSpec, split: str, preprocess: Callable, recipe: ViewRecipe) -> None:
        self.items = spec.splits[split]
        self.load_image = spec.load_image
        self.preprocess = preprocess
        self.recipe = recipe
        self.split = split

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = self.load_image(self.items[row][0])
            image.load()
        except READ_ERRORS as error:
            return row, None, f"{type(error).__name__}: {error}".splitlines()[0]
        return row, make_views(image, self.preprocess, self.recipe, self.split, row), None


def collate_rows(batch: list[tuple[int, torch.Tensor | None, str | None]]):
    """-> (rows [n] int64 of readable images, views [n, V, 3, H, W] or None, [(row, error)] unreadable)."""
    good = [(row, views) for row, views, error in batch if error is None]
    bad = [(row, error) for row, _, error in batch if error is not None]
    rows = torch.tensor([row for row, _ in good], dtype=torch.int64)
    views = torch.stack([v for _, v in good]) if good else None
    return rows, views, bad


def fixed_batches(done: np.ndarray, batch_size: int) -> list[list[int]]:
    """Rows not done, grouped by row // batch_size (empty groups dropped): [[rows of batch k], ...]."""
    todo = np.flatnonzero(~done)
    if todo.size == 0:
        return []
    keys = todo // batch_size
    cuts = np.flatnonzero(np.diff(keys)) + 1
    return [chunk.tolist() for chunk in np.split(todo, cuts)]


@torch.no_grad()
def encode_images(loaded: LoadedModel, views: torch.Tensor) -> np.ndarray:
    """views [n, V, 3, H, W] -> raw encode_image [n, V, D] float32 numpy."""
    n, v = views.shape[:2]
    flat = views.reshape(n * v, *views.shape[2:])
    flat = flat.to(loaded.device, dtype=loaded.dtype, non_blocking=True)
    if loaded.channels_last:
        flat = flat.contiguous(memory_format=torch.channels_last)
    out = loaded.model.encode_image(flat, normalize=False)           # CoCa normalises unless told not to
    return out.float().reshape(n, v, -1).cpu().numpy()


@torch.no_grad()
def encode_prompt_set(loaded: LoadedModel, prompts: list[str],
                      batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """prompts [P] -> (projected [P, D], eos [P, W] or None without EOS features) float32 numpy, from one
    text pass per batch."""
    projected, eos = [], []
    for start in range(0, len(prompts), batch_size):
        tokens = loaded.tokenizer(prompts[start:start + batch_size]).to(loaded.device)
        p, e = encode_text_with_eos(loaded.model, tokens, loaded.text_head, loaded.precision)
        projected.append(p.float().cpu())
        eos.append(None if e is None else e.float().cpu())
    return torch.cat(projected).numpy(), None if eos[0] is None else torch.cat(eos).numpy()


def cache_attrs(spec: DatasetSpec, loaded: LoadedModel) -> dict[str, Any]:
    """Root attributes of the cache for this dataset and model."""
    return {
        "model": loaded.name,
        "pretrained": loaded.pretrained_id,
        "pretrained_sha256": loaded.pretrained_sha256,
        "dataset": spec.name,
        "image_size": loaded.image_size,
        "precision": loaded.precision,
        "split_source": spec.split_source,
        **{key: value for key, value in spec.attrs.items()},
    }


def embedding_dtype(precision: str) -> np.dtype:
    """Stored embedding dtype: float16 for fp16 runs, float32 otherwise (bf16 does not fit float16's range)."""
    return np.dtype("float16" if precision == "fp16" else "float32")


def _write_header(writer: CacheWriter, spec: DatasetSpec, loaded: LoadedModel, prompt_sets: list[PromptSet],
                  batch_size: int) -> dict[str, int]:
    writer.write_model(**cache_model_part(loaded))
    writer.write_classes(spec.classnames, spec.original_classnames)
    counts = {}
    for prompt_set in prompt_sets:
        projected, eos = encode_prompt_set(loaded, prompt_set.prompts, batch_size)
        writer.write_text(prompt_set.name, prompt_set.prompts, np.asarray(prompt_set.classes), projected, eos,
                          attrs=prompt_set.attrs)
        counts[prompt_set.name] = len(prompt_set.prompts)
    return counts


def _bad_image_error(spec: DatasetSpec, split: str, row: int, reason: str, tmp: Path) -> ClipBridgeError:
    path = spec.item_name(spec.splits[split][row][0])
    full = spec.root / path if spec.root is not None else path
    return ClipBridgeError(f"cannot read image {full} ({reason}); fix or remove it, or pass --skip-bad to leave "
                           f"it out; rerunning resumes from {tmp}")


def _extract_split(ctx: DistContext, writer: CacheWriter | None, spec: DatasetSpec, split: str,
                   loaded: LoadedModel, recipe: ViewRecipe, options: ExtractOptions, tmp: Path) -> tuple[int, int]:
    """Encode the rows of one split not done yet; returns (rows encoded now, rows skipped now)."""
    split_recipe = recipe.for_split(split)
    rows = spec.splits[split]

    def start() -> np.ndarray:
        dim = loaded.text_head.dim
        return writer.ensure_split(split, np.array([label for _, label in rows]),
                                   [spec.item_name(item) for item, _ in rows], split_recipe.views, dim,
                                   embedding_dtype(loaded.precision), split_recipe.attrs())

    done = ctx.run_on_main(start)
    batches = fixed_batches(done, options.batch_size)
    mine = batches[ctx.rank::ctx.world]
    loader = DataLoader(ImageRows(spec, split, loaded.preprocess, recipe), batch_sampler=mine,
                        num_workers=options.workers, collate_fn=collate_rows,
                        pin_memory=loaded.device.type == "cuda", persistent_workers=False)
    batches_iter = iter(loader)
    bar = tqdm(total=sum(len(b) for b in batches), desc=f"{spec.name}/{split}", unit="img",
               disable=not (options.progress and ctx.is_main), leave=False)
    encoded = skipped = 0
    rounds = (len(batches) + ctx.world - 1) // ctx.world
    try:
        for round_index in range(rounds):
            has_batch = round_index * ctx.world + ctx.rank < len(batches)
            payload = None
            if has_batch:
                batch_rows, views, bad = next(batches_iter)
                embedding = encode_images(loaded, views) if views is not None else None
                payload = (batch_rows.numpy(), embedding, bad)
            gathered = ctx.gather(payload)

            def write() -> tuple[int, int]:
                n_good = n_bad = 0
                for item in gathered:
                    if item is None:
                        continue
                    good_rows, embedding, bad = item
                    if bad and not options.skip_bad:
                        raise _bad_image_error(spec, split, bad[0][0], bad[0][1], tmp)
                    if bad:
                        for row, reason in bad:
                            writer.mark_skipped(split, [row], reason)
                    if good_rows.size:
                        writer.write_rows(split, good_rows, embedding)
                    n_good += int(good_rows.size)
                    n_bad += len(bad)
                return n_good, n_bad

            n_good, n_bad = ctx.run_on_main(write)
            encoded += n_good
            skipped += n_bad
            bar.update(n_good + n_bad)
    finally:
        bar.close()
    return encoded, skipped


def run_extraction(spec: DatasetSpec, loaded: LoadedModel, prompt_sets: list[PromptSet], out: Path,
                   options: ExtractOptions, ctx: DistContext | None = None) -> ExtractSummary | None:
    """Extract every split of `spec` into `out` (via "<out>.tmp", resuming it). Returns the summary on rank 0."""
    ctx = ctx or DistContext()
    started = time.perf_counter()
    recipe = ViewRecipe(views=options.views, seed=options.seed, size=loaded.image_size, mean=loaded.mean,
                        std=loaded.std)
    writer: CacheWriter | None = None

    def open_writer() -> bool:
        nonlocal writer
        writer = CacheWriter(out, attrs=cache_attrs(spec, loaded), overwrite=options.overwrite,
                             restart=options.restart)
        return writer.resumed

    resumed = ctx.run_on_main(open_writer)
    try:
        summary = ExtractSummary(path=out, resumed=resumed)
        counts = ctx.run_on_main(lambda: _write_header(writer, spec, loaded, prompt_sets, options.text_batch_size))
        summary.text_sets = counts
        for split in spec.splits:
            encoded, _ = _extract_split(ctx, writer, spec, split, loaded, recipe, options, tmp_path(out))
            summary.encoded += encoded
        if ctx.is_main:
            for split in spec.splits:
                done_skipped = writer.file[f"images/{split}/skipped"][()]
                summary.splits[split] = (len(spec.splits[split]) - int(done_skipped.sum()), int(done_skipped.sum()))
        ctx.run_on_main(writer.finish if writer else lambda: None)
    except OSError as error:  # disk full, file removed under us, ...: the .tmp holds everything done so far
        raise ClipBridgeError(f"writing {tmp_path(out)} failed ({error}); rerunning the same command resumes") \
            from None
    finally:
        if writer is not None:
            writer.close()
    summary.seconds = time.perf_counter() - started
    return summary if ctx.is_main else None
