"""Named view families: how the views of a few-shot image are made, exactly and reproducibly.

A view family is a name plus a seeded recipe (transform and parameters, number of copies). Methods' papers
do not share one augmentation (RECIPES.md §2), so a cache can hold several families side by side for the
same images, and each method's recipe picks the families it uses (a support shot's views are the
concatenation of the families' copies, in the order the recipe lists them).

Built-in families (`extract --list-view-families`):

    plain        1 copy: the model's own preprocess (resize shorter side, centre crop, normalise)
    flip         1 copy: horizontal mirror (p = 1), then the model's preprocess   (SeMoBridge's "F")
    tip          10 copies: RandomResizedCrop(size, scale (0.5, 1), ratio (3/4, 4/3), bicubic) + flip p 0.5
                 (Tip-Adapter, APE, GDA: RECIPES.md §2.2-2.4)
    semo-r0.5-j  10 copies: RandomResizedCrop(size, scale (0.5, 1), ratio (1, 1), bicubic) + flip p 0.5
                 + ColorJitter(0.4, 0.4, 0.4, 0.1)                                (SeMoBridge's "R(0.5)+J")
    semo-r0.5    the same without ColorJitter
    semo-r0.8-j  scale (0.8, 1), with ColorJitter                                   (SeMoBridge's "R(0.8)+J")
    semo-r0.8    scale (0.8, 1), without ColorJitter                                (SeMoBridge's "R(0.8)")
    coop-rrc     10 copies: RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3), bicubic) + flip p 0.5
                 (the training augmentation of CoOp-style trainers, CLIP-Adapter: RECIPES.md §2.5)
    gda-imagenet 10 copies: the same transform as coop-rrc, GDA's ImageNet train loader (RECIPES.md §2.4:
                 its ImageNet crops are scale (0.08, 1), its other datasets' Tip's (0.5, 1)); a family of its
                 own, so its crops are drawn from its own seeds

Copy c of a random family for image `item` of split s uses its own torch.Generator seeded from
(seed, family, s, item, c), so the values depend on nothing else: not on batch order, DataLoader workers,
resume, the number of processes, which other images are encoded, or how many copies are stored (the
first n copies of a 10-copy family ARE the n-copy family; SeMoBridge's DTD 16-shot recipe uses 5).
The random parameters are drawn exactly as torchvision's RandomResizedCrop, RandomHorizontalFlip and
ColorJitter draw them (same calls, same order), from that generator: a copy equals
Compose([RandomResizedCrop, RandomHorizontalFlip, ColorJitter, ToTensor, Normalize]) applied after
torch.manual_seed(view seed) (tests/test_extract_views.py checks it).

Knowing differences from the official code: SeMoBridge saves each copy as a JPEG and re-reads it through
the plain transform (re-compression; here the copy is encoded directly), and every trained method's code
draws fresh crops each epoch (here the cached copies are cycled).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from clipbridge.errors import ClipBridgeError

DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
JITTER = (0.4, 0.4, 0.4, 0.1)


@dataclass(frozen=True)
class ViewFamily:
    """One named family of views.

    kind        "plain" (model preprocess), "flip" (mirror + preprocess) or "crop" (random resized crops)
    copies      views per image
    crop_scale, crop_ratio, flip_p, jitter   parameters of "crop" (jitter None = no colour jitter)
    source      where the recipe comes from (RECIPES.md section)
    """

    name: str
    kind: str
    copies: int
    source: str
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = DEFAULT_RATIO
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] | None = None

    @property
    def random(self) -> bool:
        return self.kind == "crop"

    def describe(self) -> str:
        """One line saying exactly what a view of this family is."""
        if self.kind == "plain":
            return "the model's preprocess (resize, centre crop, normalise)"
        if self.kind == "flip":
            return "horizontal flip (p 1), then the model's preprocess"
        jitter = f" + ColorJitter{self.jitter} (random order)" if self.jitter else ""
        ratio = "1" if self.crop_ratio == (1.0, 1.0) else f"({self.crop_ratio[0]:.4g}, {self.crop_ratio[1]:.4g})"
        return (f"{self.copies} x RandomResizedCrop(size, scale {self.crop_scale}, ratio {ratio}, bicubic) + "
                f"flip p {self.flip_p}{jitter} + Normalize")

    def recipe(self, seed: int) -> dict:
        """What the cache stores beside the family's embeddings."""
        return {"family": self.name, "describe": self.describe(), "seed": int(seed), "source": self.source,
                "params": asdict(self),
                "seeding": "torch.Generator per copy, seeded by blake2b(seed:family:split:item:copy)"}


def _semo(name: str, scale: float, jitter: bool) -> ViewFamily:
    return ViewFamily(name, "crop", 10, "RECIPES.md §2.1 (SeMoBridge few-shot augmentation)", (scale, 1.0),
                      (1.0, 1.0), 0.5, JITTER if jitter else None)


BUILTIN_FAMILIES: dict[str, ViewFamily] = {f.name: f for f in (
    ViewFamily("plain", "plain", 1, "RECIPES.md §1 (test transform)"),
    ViewFamily("flip", "flip", 1, "RECIPES.md §2.1 (SeMoBridge's F: flip p = 1)"),
    ViewFamily("tip", "crop", 10, "RECIPES.md §2.2-2.4 (Tip-Adapter / APE / GDA: augment_epoch 10)"),
    _semo("semo-r0.5-j", 0.5, True),
    _semo("semo-r0.5", 0.5, False),
    _semo("semo-r0.8-j", 0.8, True),
    _semo("semo-r0.8", 0.8, False),
    ViewFamily("coop-rrc", "crop", 10, "RECIPES.md §2.5 (CoOp/Dassl random_resized_crop, scale 0.08-1)",
               (0.08, 1.0)),
    ViewFamily("gda-imagenet", "crop", 10, "RECIPES.md §2.4 (GDA's ImageNet train loader: crop scale 0.08-1 + "
               "flip, augment_epoch 10)", (0.08, 1.0)),
)}
PLAIN = "plain"


def get_family(name: str) -> ViewFamily:
    """The built-in family `name`; an unknown name is a ClipBridgeError listing the known ones."""
    try:
        return BUILTIN_FAMILIES[name]
    except KeyError:
        raise ClipBridgeError(f"unknown view family {name!r}; known: {', '.join(BUILTIN_FAMILIES)} "
                              "(see `extract --list-view-families`)") from None


def describe_families() -> list[str]:
    """One line per built-in family: 'name: copies x what (source)'."""
    return [f"{f.name:12s} {f.copies:2d} view(s): {f.describe()}  [{f.source}]" for f in BUILTIN_FAMILIES.values()]


def view_seed(seed: int, family: str, split: str, item: str, copy: int) -> int:
    """A 63-bit seed from (seed, family, split, item, copy), stable across platforms and runs."""
    digest = hashlib.blake2b(f"{seed}:{family}:{split}:{item}:{copy}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    """torch.empty(1).uniform_(low, high).item(), torchvision's draw, from `generator`."""
    return torch.empty(1).uniform_(low, high, generator=generator).item()


def crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
             generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop.get_params chooses them (10 tries, then its
    central-crop fallback), drawn from `generator`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(generator, *scale)
        aspect = math.exp(_uniform(generator, *log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class ViewMaker:
    """Makes the views of one image for any family: the model's preprocess, its input size and Normalize."""

    preprocess: Callable[[Image.Image], torch.Tensor]
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    seed: int = 0

    def random_view(self, image: Image.Image, family: ViewFamily, generator: torch.Generator) -> torch.Tensor:
        """One view [3, size, size] float32 of a "crop" family."""
        top, left, h, w = crop_box(image.width, image.height, family.crop_scale, family.crop_ratio, generator)
        view = TF.resized_crop(image, top, left, h, w, [self.size, self.size],
                               interpolation=InterpolationMode.BICUBIC)
        if torch.rand(1, generator=generator) < family.flip_p:
            view = TF.hflip(view)
        if family.jitter is not None:
            b, c, s, hue = family.jitter
            order = torch.randperm(4, generator=generator).tolist()
            factors = (_uniform(generator, 1 - b, 1 + b), _uniform(generator, 1 - c, 1 + c),
                       _uniform(generator, 1 - s, 1 + s), _uniform(generator, -hue, hue))
            adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
            for index in order:
                view = adjust[index](view, factors[index])
        return TF.normalize(TF.to_tensor(view), list(self.mean), list(self.std))

    def views(self, image: Image.Image, family: ViewFamily, split: str, item: str) -> torch.Tensor:
        """The family's views of one image: [copies, 3, H, W]."""
        if family.kind == "plain":
            return self.preprocess(image).unsqueeze(0)
        if family.kind == "flip":
            return self.preprocess(TF.hflip(image)).unsqueeze(0)
        out = []
        for copy in range(family.copies):
            generator = torch.Generator().manual_seed(view_seed(self.seed, family.name, split, item, copy))
            out.append(self.random_view(image, family, generator))
        return torch.stack(out)
