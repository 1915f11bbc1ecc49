"""Image views: view 0 plain, view 1 mirrored, views >= 2 seeded random crops (METHOD.md section 1).

View v >= 2 of row r in split s uses its own torch.Generator seeded from (seed, s, r, v), so the values
do not depend on batch order, DataLoader workers, resume or the number of processes:
    RandomResizedCrop(size, scale (0.5, 1), ratio (1, 1)) -> horizontal flip (p 0.5)
    -> ColorJitter(brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1) in random order
    -> to tensor -> the model's Normalize(mean, std).
Views 0 and 1 go through the model's own preprocess (resize, centre crop, normalise); view 1 mirrors the
image first.
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

TEST_SPLITS = ("test",)


@dataclass(frozen=True)
class ViewRecipe:
    """How the V views of an image are made; stored with every split of the cache."""

    views: int
    seed: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (1.0, 1.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)

    def for_split(self, split: str) -> "ViewRecipe":
        """The test split gets the plain view only."""
        if split in TEST_SPLITS and self.views != 1:
            return ViewRecipe(**{**asdict(self), "views": 1})
        return self

    def attrs(self) -> dict:
        """Attributes recorded on /images/<split>/done."""
        return {
            "seed": self.seed,
            "views_recipe": (
                "view 0: model preprocess; view 1: horizontal flip + model preprocess; views >= 2: "
                f"RandomResizedCrop({self.size}, scale={self.crop_scale}, ratio={self.crop_ratio}, bicubic) + "
                f"flip(p={self.flip_p}) + ColorJitter{self.jitter} (random order) + Normalize; "
                "torch.Generator seeded by blake2b(seed, split, row, view)"),
            "views_params": asdict(self),
        }


def view_seed(seed: int, split: str, row: int, view: int) -> int:
    """A 63-bit seed from (seed, split, row, view), stable across platforms and runs."""
    digest = hashlib.blake2b(f"{seed}:{split}:{row}:{view}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _crop_box(width: int, height: int, recipe: ViewRecipe, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) as RandomResizedCrop chooses them (10 tries, then the central crop)."""
    area = width * height
    log_ratio = (math.log(recipe.crop_ratio[0]), math.log(recipe.crop_ratio[1]))
    for _ in range(10):
        target = area * _uniform(generator, *recipe.crop_scale)
        aspect = math.exp(_uniform(generator, *log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    side = min(width, height)
    return (height - side) // 2, (width - side) // 2, side, side


def random_view(image: Image.Image, recipe: ViewRecipe, generator: torch.Generator) -> torch.Tensor:
    """One augmented view [3, size, size] float32, normalised."""
    top, left, h, w = _crop_box(image.width, image.height, recipe, generator)
    view = TF.resized_crop(image, top, left, h, w, [recipe.size, recipe.size],
                           interpolation=InterpolationMode.BICUBIC)
    if float(torch.rand((), generator=generator)) < recipe.flip_p:
        view = TF.hflip(view)
    b, c, s, hue = recipe.jitter
    factors = (_uniform(generator, 1 - b, 1 + b), _uniform(generator, 1 - c, 1 + c),
               _uniform(generator, 1 - s, 1 + s), _uniform(generator, -hue, hue))
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for index in torch.randperm(4, generator=generator).tolist():
        view = adjust[index](view, factors[index])
    return TF.normalize(TF.to_tensor(view), list(recipe.mean), list(recipe.std))


def make_views(image: Image.Image, preprocess: Callable[[Image.Image], torch.Tensor], recipe: ViewRecipe,
               split: str, row: int) -> torch.Tensor:
    """All views of one image: [V, 3, H, W] (V = recipe.for_split(split).views)."""
    count = recipe.for_split(split).views
    views = [preprocess(image)]
    if count > 1:
        views.append(preprocess(TF.hflip(image)))
    for view in range(2, count):
        generator = torch.Generator().manual_seed(view_seed(recipe.seed, split, row, view))
        views.append(random_view(image, recipe, generator))
    return torch.stack(views)
