"""The extraction loop: dataset + model + prompt sets -> one cache file, resumable, torchrun-aware.

What is stored is planned by extract/plan.py (which images of each split, which view families each gets;
when the cache exists, the union with what it holds). Work is cut into fixed batches: batch k of a split
holds its stored rows [k*B, (k+1)*B); each image of a batch is decoded once and gives the views of every
family it still lacks; each family's views of the batch go through the model together, in chunks of B
images, and are written (and marked done) as a whole. So a resumed run and a run with N processes encode
exactly the same model batches as one uninterrupted process, and on CPU give identical values. Under
torchrun, rank r encodes batches k with k % N == r; each round rank 0 gathers the ranks' results and writes
them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipbridge.cache.coverage import Coverage
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.schema import tmp_path
from clipbridge.cache.writer import CacheWriter
from clipbridge.extract.datasets.registry import DatasetSpec
from clipbridge.extract.distributed import DistContext
from clipbridge.extract.models import LoadedModel, cache_model_part, encode_text_with_eos
from clipbridge.extract.plan import ExtractionPlan, SplitPlan, base_positions, plan_extraction
from clipbridge.extract.prompts import PromptSet
from clipbridge.extract.views import ViewMaker, get_family

READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
#: Rows copied per read when extending a cache.
COPY_ROWS = 4096


@dataclass
class ExtractOptions:
    """Knobs of one extraction run (see `python cli.py extract --help`).

    families   augmented view families of the support images (every stored image gets "plain")
    coverage   which images to store (cache.coverage.Coverage; default every image)
    extract_args  the command's options, recorded in the cache for hints that extend it
    """

    families: tuple[str, ...] = ()
    coverage: Coverage = field(default_factory=Coverage.everything)
    batch_size: int = 256
    workers: int = 0
    seed: int = 0
    skip_bad: bool = False
    progress: bool = True
    overwrite: bool = False
    restart: bool = False
    text_batch_size: int = 256
    extract_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExtractSummary:
    """What a run did: per split (images stored, skipped) and families (images holding each), prompt
    counts, images decoded and views encoded now, rows copied from the cache being extended, timing."""

    path: Path
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)
    families: dict[str, dict[str, int]] = field(default_factory=dict)
    text_sets: dict[str, int] = field(default_factory=dict)
    coverage: str = ""
    encoded: int = 0
    views: int = 0
    copied: int = 0
    seconds: float = 0.0
    resumed: bool = False
    extended: bool = False
    up_to_date: bool = False

    def lines(self) -> list[str]:
        if self.up_to_date:
            return [f"{self.path} already holds everything asked for ({self.coverage}); nothing to do"]
        rate = self.encoded / self.seconds if self.seconds > 0 else 0.0
        how = " (extended)" if self.extended else ""
        out = [f"wrote {self.path}" + how + (" (resumed)" if self.resumed else ""), f"  coverage: {self.coverage}"]
        for split, (rows, skipped) in self.splits.items():
            fams = ", ".join(f"{name} {count}" for name, count in self.families.get(split, {}).items())
            out.append(f"  {split}: {rows} images" + (f", {skipped} skipped (unreadable)" if skipped else "")
                       + f"; view families: {fams}")
        out.append("  text: " + ", ".join(f"{name} {count} prompts" for name, count in self.text_sets.items()))
        out.append(f"  encoded {self.encoded} images ({self.views} views) in {self.seconds:.1f} s "
                   f"({rate:.1f} images/s)" + (f"; copied {self.copied} image rows" if self.copied else ""))
        return out


class ImageRows(Dataset):
    """Row i of a split's plan -> (i, {family: views [E, 3, H, W]} of the families it still lacks, error)."""

    def __init__(self, spec: DatasetSpec, split: str, plan: SplitPlan, maker: ViewMaker,
                 pending: dict[int, tuple[str, ...]]) -> None:
        self.items = spec.splits[split]
        self.load_image = spec.load_image
        self.split, self.plan, self.maker, self.pending = split, plan, maker, pending

    def __len__(self) -> int:
        return self.plan.rows.size

    def __getitem__(self, row: int) -> tuple[int, dict[str, torch.Tensor] | None, str | None]:
        try:
            image = self.load_image(self.items[int(self.plan.rows[row])][0])
            image.load()
        except READ_ERRORS as error:
            return row, None, f"{type(error).__name__}: {error}".splitlines()[0]
        name = self.plan.names[row]
        return row, {f: self.maker.views(image, get_family(f), self.split, name) for f in self.pending[row]}, None


def collate_rows(batch: list[tuple[int, dict | None, str | None]]):
    """-> ({family: (rows [n_f] int64, views [n_f, E, 3, H, W])}, [(row, error)] of unreadable images)."""
    by_family: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
    bad = []
    for row, views, error in batch:
        if error is not None:
            bad.append((row, error))
            continue
        for family, tensor in views.items():
            rows, tensors = by_family.setdefault(family, ([], []))
            rows.append(row)
            tensors.append(tensor)
    return {f: (torch.tensor(rows, dtype=torch.int64), torch.stack(t)) for f, (rows, t) in by_family.items()}, bad


def fixed_batches(pending: dict[int, tuple[str, ...]], batch_size: int) -> list[list[int]]:
    """Rows with pending work, grouped by row // batch_size (empty groups dropped): [[rows of batch k], ...]."""
    groups: dict[int, list[int]] = {}
    for row in sorted(pending):
        groups.setdefault(row // batch_size, []).append(row)
    return [groups[k] for k in sorted(groups)]


@torch.no_grad()
def encode_images(loaded: LoadedModel, views: torch.Tensor, chunk: int | None = None) -> np.ndarray:
    """views [n, V, 3, H, W] -> raw encode_image [n, V, D] float32 numpy, through the model in fixed
    chunks of `chunk` images (default: all at once)."""
    n, v = views.shape[:2]
    flat = views.reshape(n * v, *views.shape[2:])
    step = (chunk or n) * v
    parts = []
    for start in range(0, flat.shape[0], step):
        part = flat[start:start + step].to(loaded.device, dtype=loaded.dtype, non_blocking=True)
        if loaded.channels_last:
            part = part.contiguous(memory_format=torch.channels_last)
        # raw embeddings: CoCa normalises unless told not to
        parts.append(loaded.model.encode_image(part, normalize=False).float().cpu())
    return torch.cat(parts).reshape(n, v, -1).numpy()


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


def _write_header(writer: CacheWriter, spec: DatasetSpec, loaded: LoadedModel, plan: ExtractionPlan,
                  batch_size: int) -> dict[str, int]:
    writer.write_model(**cache_model_part(loaded))
    writer.write_classes(spec.classnames, spec.original_classnames)
    counts = {}
    for name in plan.copied_sets:                     # kept from the cache being extended
        text = plan.base.text(name)
        writer.write_text(name, text.prompts, text.classes.numpy(), text.projected.numpy(),
                          None if text.eos is None else text.eos.numpy(), attrs=plan.base.text_attrs(name))
        counts[name] = len(text.prompts)
    for prompt_set in plan.prompt_sets:
        projected, eos = encode_prompt_set(loaded, prompt_set.prompts, batch_size)
        writer.write_text(prompt_set.name, prompt_set.prompts, np.asarray(prompt_set.classes), projected, eos,
                          attrs=prompt_set.attrs)
        counts[prompt_set.name] = len(prompt_set.prompts)
    return counts


def _bad_image_error(spec: DatasetSpec, plan: SplitPlan, split: str, row: int, reason: str,
                     tmp: Path) -> ClipBridgeError:
    path = spec.item_name(spec.splits[split][int(plan.rows[row])][0])
    full = spec.root / path if spec.root is not None else path
    return ClipBridgeError(f"cannot read image {full} ({reason}); fix or remove it, or pass --skip-bad to leave "
                           f"it out; rerunning resumes from {tmp}")


def _start_split(writer: CacheWriter, split: str, plan: SplitPlan, maker_seed: int, dim: int, dtype: np.dtype,
                 base) -> tuple[dict[int, tuple[str, ...]], int]:
    """Create (or check, on resume) the split's rows and families, copy what the base cache holds, and
    return the pending work {row: families it still lacks} and the number of rows copied."""
    writer.write_list(split, plan.list_labels, plan.fingerprint)
    writer.ensure_split(split, source=plan.rows, labels=plan.labels, paths=plan.names)
    copied = 0
    if base is not None and split in base.splits:
        copied = _copy_base(writer, split, plan, base, maker_seed, dim, dtype)
    pending: dict[int, list[str]] = {}
    for family, positions in plan.families.items():
        fam = get_family(family)
        done = writer.ensure_family(split, family, rows=positions, copies=fam.copies, dim=dim, dtype=dtype,
                                    recipe=fam.recipe(maker_seed))
        for row in positions[~done].tolist():
            pending.setdefault(row, []).append(family)
    return {row: tuple(families) for row, families in pending.items()}, copied


def _copy_base(writer: CacheWriter, split: str, plan: SplitPlan, base, seed: int, dim: int, dtype: np.dtype) -> int:
    """Copy the views (and unreadable marks) the cache being extended holds into the new file."""
    rows = base.rows(split)
    if rows.skipped.any():
        writer.mark_skipped(split, np.searchsorted(plan.rows, rows.source[rows.skipped]), "unreadable (copied)")
    copied = 0
    for family, positions in plan.families.items():
        fam = get_family(family)
        done = writer.ensure_family(split, family, rows=positions, copies=fam.copies, dim=dim, dtype=dtype,
                                    recipe=fam.recipe(seed))
        old, new = base_positions(base, split, family, plan)
        keep = ~done[new]
        old, new = old[keep], new[keep]
        for start in range(0, old.size, COPY_ROWS):
            block = base.views(split, family, base.family(split, family).rows[old[start:start + COPY_ROWS]])
            writer.write_views(split, family, new[start:start + COPY_ROWS], block.numpy())
        copied = max(copied, int(old.size))
    return copied


def _extract_split(ctx: DistContext, writer: CacheWriter | None, spec: DatasetSpec, split: str, plan: SplitPlan,
                   base, loaded: LoadedModel, options: ExtractOptions, tmp: Path) -> tuple[int, int, int, int]:
    """Encode what the split still lacks; returns (images decoded, views encoded, skipped now, copied)."""
    maker = ViewMaker(loaded.preprocess, loaded.image_size, loaded.mean, loaded.std, options.seed)
    dim = loaded.text_head.dim
    dtype = embedding_dtype(loaded.precision)
    pending, copied = ctx.run_on_main(lambda: _start_split(writer, split, plan, options.seed, dim, dtype, base))
    batches = fixed_batches(pending, options.batch_size)
    mine = batches[ctx.rank::ctx.world]
    loader = DataLoader(ImageRows(spec, split, plan, maker, pending), batch_sampler=mine,
                        num_workers=options.workers, collate_fn=collate_rows,
                        pin_memory=loaded.device.type == "cuda", persistent_workers=False)
    batches_iter = iter(loader)
    bar = tqdm(total=sum(len(b) for b in batches), desc=f"{spec.name}/{split}", unit="img",
               disable=not (options.progress and ctx.is_main), leave=False)
    decoded = views = skipped = 0
    rounds = (len(batches) + ctx.world - 1) // ctx.world
    try:
        for round_index in range(rounds):
            payload = None
            if round_index * ctx.world + ctx.rank < len(batches):
                by_family, bad = next(batches_iter)
                encoded = {f: (rows.numpy(), encode_images(loaded, tensor, options.batch_size))
                           for f, (rows, tensor) in by_family.items()}
                payload = (encoded, bad)
            gathered = ctx.gather(payload)

            def write() -> tuple[int, int, int]:
                n_rows: set[int] = set()
                n_views = n_bad = 0
                for item in gathered:
                    if item is None:
                        continue
                    encoded, bad = item
                    if bad and not options.skip_bad:
                        raise _bad_image_error(spec, plan, split, bad[0][0], bad[0][1], tmp)
                    for row, reason in bad:
                        writer.mark_skipped(split, [row], reason)
                    for family, (rows, embedding) in encoded.items():
                        writer.write_views(split, family, np.searchsorted(plan.families[family], rows), embedding)
                        n_rows.update(rows.tolist())
                        n_views += embedding.shape[0] * embedding.shape[1]
                    n_bad += len(bad)
                return len(n_rows), n_views, n_bad

            n_rows, n_views, n_bad = ctx.run_on_main(write)
            decoded += n_rows
            views += n_views
            skipped += n_bad
            bar.update(n_rows + n_bad)
    finally:
        bar.close()
    return decoded, views, skipped, copied


def run_extraction(spec: DatasetSpec, loaded: LoadedModel, prompt_sets: list[PromptSet], out: Path,
                   options: ExtractOptions, ctx: DistContext | None = None) -> ExtractSummary | None:
    """Extract `spec` into `out` (via "<out>.tmp", resuming it) as planned by extract/plan.py. Returns the
    summary on rank 0."""
    ctx = ctx or DistContext()
    started = time.perf_counter()
    attrs = cache_attrs(spec, loaded)
    plan = ctx.run_on_main(lambda: plan_extraction(spec, prompt_sets, options.coverage, options.families, attrs,
                                                   out, options.overwrite))
    summary = ExtractSummary(path=out, coverage=plan.coverage.describe(), extended=plan.base is not None)
    if plan.up_to_date:
        summary.up_to_date = True
        return summary if ctx.is_main else None
    writer: CacheWriter | None = None

    def open_writer() -> bool:
        nonlocal writer
        writer = CacheWriter(out, attrs=attrs, overwrite=options.overwrite or plan.base is not None,
                             restart=options.restart)
        writer.set_attrs(coverage=plan.coverage.to_attr(), extract_args=options.extract_args)
        return writer.resumed

    summary.resumed = ctx.run_on_main(open_writer)
    try:
        summary.text_sets = ctx.run_on_main(
            lambda: _write_header(writer, spec, loaded, plan, options.text_batch_size))
        for split, split_plan in plan.splits.items():
            decoded, views, _, copied = _extract_split(ctx, writer, spec, split, split_plan, plan.base, loaded,
                                                       options, tmp_path(out))
            summary.encoded += decoded
            summary.views += views
            summary.copied += copied
        if ctx.is_main:
            for split, split_plan in plan.splits.items():
                skipped = int(writer.file[f"images/{split}/skipped"][()].sum())
                summary.splits[split] = (split_plan.rows.size - skipped, skipped)
                summary.families[split] = {f: int(p.size) for f, p in split_plan.families.items()}
        ctx.run_on_main(writer.finish if writer else lambda: None)
    except OSError as error:  # disk full, file removed under us, ...: the .tmp holds everything done so far
        raise ClipBridgeError(f"writing {tmp_path(out)} failed ({error}); rerunning the same command resumes") \
            from None
    finally:
        if writer is not None:
            writer.close()
    summary.seconds = time.perf_counter() - started
    return summary if ctx.is_main else None
