"""`shapes`: the embedded, procedurally generated image dataset (no files, no download).

Every image is a small scene drawn from numbers: a background (flat, gradient or blotchy), one main object
whose shape, colour and pattern define the class, often a smaller distractor object, sometimes an
occluding bar, and pixel noise. The same `render_scenes` draws the downstream images here and the
pre-training images of the tiny CLIP (extract/toy_clip.py), which samples scenes from a wider distribution.

    image = load_image("test/red circle/0007")   # PIL.Image, 64x64 RGB, identical on every call
    spec = get_dataset("shapes")                  # registered reader: DatasetSpec with items as ids

An image depends only on (split, class, index, seed); there is no randomness outside that.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from clipbridge.errors import ClipBridgeError
from clipbridge.extract.datasets.registry import DatasetSpec, register_dataset

IMAGE_SIZE = 64
DATASET_NAME = "shapes"
DEFAULT_SEED = 0
SPLIT_SIZES = {"train": 64, "val": 16, "test": 64}  # images per class

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "diamond")
BAR = len(SHAPES)  # shape id of the occluding bar: drawn, never named
PATTERNS = ("solid", "striped", "dotted", "checkered")
COLOURS = {
    "red": (0.86, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.88, 0.10),
    "green": (0.12, 0.68, 0.20),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.10, 0.25, 0.90),
    "purple": (0.55, 0.15, 0.75),
    "pink": (1.00, 0.50, 0.72),
    "brown": (0.50, 0.30, 0.10),
    "white": (0.96, 0.96, 0.96),
    "black": (0.06, 0.06, 0.06),
    "gray": (0.50, 0.50, 0.50),
}
COLOUR_NAMES = tuple(COLOURS)
BACKGROUNDS = ("flat", "gradient", "blotchy")


@dataclass(frozen=True)
class ShapesClass:
    """One downstream class: the main object's shape, colour and pattern (names from the tuples above)."""

    shape: str
    colour: str
    pattern: str = "solid"

    @property
    def name(self) -> str:
        """Readable class name that prompts can describe, e.g. 'striped blue square'."""
        words = ([] if self.pattern == "solid" else [self.pattern]) + [self.colour, self.shape]
        return " ".join(words)


CLASSES = (
    ShapesClass("circle", "red"),
    ShapesClass("circle", "blue"),
    ShapesClass("circle", "green"),
    ShapesClass("square", "red"),
    ShapesClass("square", "blue"),
    ShapesClass("square", "yellow"),
    ShapesClass("triangle", "green"),
    ShapesClass("triangle", "orange"),
    ShapesClass("star", "purple"),
    ShapesClass("star", "yellow"),
    ShapesClass("hexagon", "pink"),
    ShapesClass("ring", "cyan"),
    ShapesClass("cross", "white"),
    ShapesClass("diamond", "brown"),
    ShapesClass("square", "blue", "striped"),
    ShapesClass("circle", "red", "dotted"),
)
CLASSNAMES = tuple(c.name for c in CLASSES)


@dataclass(frozen=True)
class Thing:
    """One object: shape id (SHAPES index or BAR), colours in [0,1], pattern id, pose in image units.

    Position (cx, cy) is in [-1, 1] with y pointing down; size is the radius as a fraction of half the image.
    """

    shape: int
    colour: tuple[float, float, float]
    pattern: int = 0
    pattern_colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    frequency: float = 3.0  # pattern repeats across the object's radius
    cx: float = 0.0
    cy: float = 0.0
    size: float = 0.5
    angle: float = 0.0


@dataclass(frozen=True)
class Scene:
    """A whole image: background kind/colours/field, objects in paint order, pixel noise (std, seed)."""

    background: int
    background_a: tuple[float, float, float]
    background_b: tuple[float, float, float]
    background_field: np.ndarray  # [8, 8] in [0, 1]: the blotches; field[0, 0] also sets the gradient's direction
    things: tuple[Thing, ...] = field(default_factory=tuple)
    noise: float = 0.0
    noise_seed: int = 0


# ---------------------------------------------------------------------------------------------- rendering

def _shape_distance(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Normalised distance d (inside where d <= 1) of local coords u, v [n, H, W] for one shape id."""
    if shape in (0, 3, 5):
        r = np.sqrt(u * u + v * v)
    if shape == 0:  # circle
        return r
    if shape == 1:  # square
        return np.maximum(np.abs(u), np.abs(v)) / 0.82
    if shape in (2, 6):  # triangle (apex up) or hexagon: regular polygon through its support function
        n, start, radius = (3, -math.pi / 2, 1.12) if shape == 2 else (6, 0.0, 1.0)
        support = np.max([u * math.cos(start + 2 * math.pi * k / n) + v * math.sin(start + 2 * math.pi * k / n)
                          for k in range(n)], axis=0)
        return support / (radius * math.cos(math.pi / n))
    if shape == 3:  # star
        phi = np.arctan2(v, u)
        return r / (0.42 + 0.58 * ((1 + np.cos(5 * (phi - math.pi / 2))) / 2) ** 1.6)
    if shape == 4:  # cross
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au / 0.95, av / 0.3), np.maximum(au / 0.3, av / 0.95))
    if shape == 5:  # ring
        return np.abs(r - 0.72) / 0.28
    if shape == 7:  # diamond
        return np.abs(u) / 0.72 + np.abs(v) / 1.05
    return np.maximum(np.abs(u), np.abs(v) / 0.16)  # BAR: the occluding bar


def _pattern_mask(pattern: int, frequency: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the pattern colour shows, in [0, 1], for one pattern id on local coords [n, H, W]."""
    f = frequency.reshape(-1, 1, 1)
    if pattern == 1:  # striped
        sharp = np.sin(math.pi * f * (u + v) / math.sqrt(2)) * 4
    elif pattern == 2:  # dotted
        fu, fv = np.mod(u * f / 2, 1.0) - 0.5, np.mod(v * f / 2, 1.0) - 0.5
        sharp = (0.16 - (fu * fu + fv * fv)) * 40
    elif pattern == 3:  # checkered
        sharp = np.sin(math.pi * f * u / 2) * np.sin(math.pi * f * v / 2) * 4
    else:  # solid
        return np.zeros_like(u)
    return np.clip(sharp, -0.5, 0.5) + 0.5


def _paint_things(canvas: np.ndarray, things: list[Thing], ys: np.ndarray, xs: np.ndarray) -> None:
    """Paint things[i] over canvas[i] in place; canvas [n, 3, H, W]."""
    def column(name: str) -> np.ndarray:
        return np.array([getattr(t, name) for t in things], dtype=np.float32).reshape(-1, 1, 1)

    size, angle = np.maximum(column("size"), 1e-3), column("angle")
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xs - column("cx"), ys - column("cy")
    u = (cos * dx + sin * dy) / size
    v = (sin * dx - cos * dy) / size  # v points up
    shapes = np.array([t.shape for t in things])
    patterns = np.array([t.pattern for t in things])
    distance = np.empty_like(u)
    pattern = np.empty_like(u)
    for shape in np.unique(shapes):
        rows = shapes == shape
        distance[rows] = _shape_distance(int(shape), u[rows], v[rows])
    for kind in np.unique(patterns):
        rows = patterns == kind
        pattern[rows] = _pattern_mask(int(kind), column("frequency")[rows], u[rows], v[rows])
    alpha = np.clip((1 - distance) * size * (IMAGE_SIZE / 2) + 0.5, 0, 1)[:, None]
    colour = np.array([t.colour for t in things], dtype=np.float32).reshape(-1, 3, 1, 1)
    second = np.array([t.pattern_colour for t in things], dtype=np.float32).reshape(-1, 3, 1, 1)
    paint = colour + (second - colour) * pattern[:, None]
    canvas += (paint - canvas) * alpha


def _upsample_field(fields: np.ndarray) -> np.ndarray:
    """Smoothly upsample fields [n, 8, 8] to [n, H, W] (bilinear, edge-clamped)."""
    g = fields.shape[1]
    pos = np.clip((np.arange(IMAGE_SIZE) + 0.5) * g / IMAGE_SIZE - 0.5, 0, g - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, g - 1)
    w = (pos - lo).astype(np.float32)
    rows = fields[:, lo] * (1 - w)[None, :, None] + fields[:, hi] * w[None, :, None]      # [n, H, g]
    return rows[:, :, lo] * (1 - w)[None, None, :] + rows[:, :, hi] * w[None, None, :]   # [n, H, W]


def render_scenes(scenes: list[Scene]) -> np.ndarray:
    """Draw scenes into float32 images [B, 3, H, W] in [0, 1], quantised to 8-bit levels like a PNG."""
    lin = ((np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5) / IMAGE_SIZE * 2 - 1)
    ys, xs = lin.reshape(1, -1, 1), lin.reshape(1, 1, -1)
    a = np.array([s.background_a for s in scenes], dtype=np.float32).reshape(-1, 3, 1, 1)
    b = np.array([s.background_b for s in scenes], dtype=np.float32).reshape(-1, 3, 1, 1)
    fields = np.stack([s.background_field for s in scenes]).astype(np.float32)
    kind = np.array([s.background for s in scenes]).reshape(-1, 1, 1)
    direction = (fields[:, 0, 0] * 2 * math.pi).reshape(-1, 1, 1)
    gradient = (np.cos(direction) * xs + np.sin(direction) * ys) * 0.5 + 0.5
    mix = np.where(kind == 0, 0.0, np.where(kind == 1, gradient, _upsample_field(fields)))
    canvas = a + (b - a) * np.clip(mix, 0, 1)[:, None].astype(np.float32)
    for slot in range(max(len(s.things) for s in scenes)):
        rows = np.array([slot < len(s.things) for s in scenes])
        layer = canvas[rows]
        _paint_things(layer, [s.things[slot] for s in scenes if slot < len(s.things)], ys, xs)
        canvas[rows] = layer
    for i, s in enumerate(scenes):
        if s.noise > 0:
            canvas[i] += np.random.default_rng(s.noise_seed).standard_normal(canvas[i].shape, np.float32) * s.noise
    return np.round(np.clip(canvas, 0, 1) * 255) / np.float32(255)


def to_pil(image: np.ndarray) -> Image.Image:
    """One rendered image [3, H, W] in [0, 1] -> RGB PIL image."""
    array = np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


# ------------------------------------------------------------------------------------------------ sampling

def jitter_colour(rng: np.random.Generator, name: str, amount: float = 0.08) -> tuple[float, float, float]:
    """The named colour with a small random shift per channel and brightness, clipped to [0, 1]."""
    base = np.asarray(COLOURS[name]) * rng.uniform(0.88, 1.08) + rng.uniform(-amount, amount, 3)
    return tuple(float(x) for x in np.clip(base, 0, 1))


def sample_background(rng: np.random.Generator) -> dict:
    """Random muted background: kind, two colours and the blotch/gradient field (Scene keyword args)."""
    grey = rng.uniform(0.15, 0.85)
    return _background(rng, int(rng.integers(len(BACKGROUNDS))), np.full(3, grey), spread=0.25)


def _background(rng: np.random.Generator, kind: int, centre: np.ndarray, spread: float) -> dict:
    """Scene keyword args of a background of `kind`: two colours drawn within ±spread of centre [3] per
    channel (clipped to [0, 1]), then the blotch/gradient field."""
    def tint() -> tuple[float, float, float]:
        return tuple(float(x) for x in np.clip(centre + rng.uniform(-spread, spread, 3), 0, 1))

    return dict(background=kind, background_a=tint(), background_b=tint(),
                background_field=rng.uniform(0, 1, (8, 8)).astype(np.float32))


def sample_thing(rng: np.random.Generator, *, shape: int, colour: str, pattern: int,
                 size: tuple[float, float], margin: float = 0.05) -> Thing:
    """A named object at a random pose that stays (mostly) inside the image."""
    radius = float(rng.uniform(*size))
    limit = max(1 - radius - margin, 0.0)
    contrast = "black" if np.mean(COLOURS[colour]) > 0.55 else "white"
    return Thing(shape=shape, colour=jitter_colour(rng, colour), pattern=pattern,
                 pattern_colour=jitter_colour(rng, contrast, 0.05), frequency=float(rng.uniform(2.5, 4.0)),
                 cx=float(rng.uniform(-limit, limit)), cy=float(rng.uniform(-limit, limit)), size=radius,
                 angle=float(rng.uniform(-0.35, 0.35)))


def sample_distractor(rng: np.random.Generator, size: tuple[float, float] = (0.12, 0.26)) -> Thing:
    """A smaller object with any shape, colour and pattern."""
    return sample_thing(rng, shape=int(rng.integers(len(SHAPES))),
                        colour=COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))],
                        pattern=int(rng.choice(len(PATTERNS), p=[0.55, 0.15, 0.15, 0.15])), size=size)


def sample_occluder(rng: np.random.Generator) -> Thing:
    """A long thin bar in a random colour crossing the image."""
    return Thing(shape=BAR, colour=tuple(float(x) for x in rng.uniform(0, 1, 3)),
                 cx=float(rng.uniform(-0.5, 0.5)), cy=float(rng.uniform(-0.5, 0.5)),
                 size=float(rng.uniform(0.7, 1.3)), angle=float(rng.uniform(0, math.pi)))


@dataclass(frozen=True)
class Habitat:
    """Where a class's pictures are usually taken: a home position and a background look its name never states.

    Real datasets have such context (aircraft against sky, flowers on leaves): it is what a few labelled
    images teach beyond the class name, and why few-shot methods beat zero-shot there.
    """

    cx: float
    cy: float
    background: int
    grey: float
    tint: tuple[float, float, float]


def class_habitats(count: int = len(CLASSES)) -> tuple[Habitat, ...]:
    """The fixed habitat of each class: homes spread on a 4x4 grid, backgrounds from a fixed stream."""
    rng = np.random.default_rng(20261201)
    cells = rng.permutation(16)[:count]
    return tuple(Habitat(cx=float((c % 4 - 1.5) * 0.27), cy=float((c // 4 - 1.5) * 0.27),
                         background=int(rng.integers(len(BACKGROUNDS))), grey=float(rng.uniform(0.2, 0.8)),
                         tint=tuple(float(x) for x in rng.uniform(-0.22, 0.22, 3)))
                 for c in cells)


HABITATS = class_habitats()


def sample_habitat_background(rng: np.random.Generator, habitat: Habitat) -> dict:
    """A background near the habitat's look (Scene keyword args): its kind, grey level and tint, jittered."""
    return _background(rng, habitat.background, habitat.grey + np.asarray(habitat.tint), spread=0.1)


def sample_class_scene(rng: np.random.Generator, label: int) -> Scene:
    """A downstream image of class CLASSES[label]: the class object near its habitat's home on its habitat's
    usual background (a wholly random scene one time in four), a distractor half the time, maybe a bar, noise."""
    spec, habitat = CLASSES[label], HABITATS[label]
    main = sample_thing(rng, shape=SHAPES.index(spec.shape), colour=spec.colour,
                        pattern=PATTERNS.index(spec.pattern), size=(0.32, 0.58))
    typical = rng.uniform() < 0.75
    if typical:
        limit = max(1 - main.size - 0.05, 0.0)
        home = np.clip(np.array([habitat.cx, habitat.cy]) + rng.uniform(-0.15, 0.15, 2), -limit, limit)
        main = replace(main, cx=float(home[0]), cy=float(home[1]))
    things = [sample_distractor(rng) for _ in range(int(rng.integers(0, 2)))]
    things.insert(int(rng.integers(len(things) + 1)), main)  # a distractor may overlap the main object
    if rng.uniform() < 0.15:
        things.append(sample_occluder(rng))
    background = sample_habitat_background(rng, habitat) if typical else sample_background(rng)
    return Scene(**background, things=tuple(things), noise=float(rng.uniform(0.0, 0.08)),
                 noise_seed=int(rng.integers(2**31)))


# ----------------------------------------------------------------------------------------------- dataset

def item_rng(split: str, label: int, index: int, seed: int) -> np.random.Generator:
    """The random stream of one image: a stable hash of (seed, split, label, index)."""
    digest = hashlib.sha256(f"{DATASET_NAME}|{seed}|{split}|{label}|{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def item_name(split: str, label: int, index: int) -> str:
    """Item id stored as the image 'path' in caches, e.g. 'test/red circle/0007'."""
    return f"{split}/{CLASSNAMES[label]}/{index:04d}"


def parse_item(item: str) -> tuple[str, int, int]:
    """'split/classname/index' -> (split, label, index); ClipBridgeError naming the item otherwise."""
    parts = item.split("/")
    if len(parts) != 3 or parts[0] not in SPLIT_SIZES or parts[1] not in CLASSNAMES or not parts[2].isdigit():
        raise ClipBridgeError(f"shapes: {item!r} is not an item of the shapes dataset (split/class/index)")
    return parts[0], CLASSNAMES.index(parts[1]), int(parts[2])


def render_item(item: str, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The image of one item as float32 [3, H, W] in [0, 1]."""
    split, label, index = parse_item(item)
    return render_scenes([sample_class_scene(item_rng(split, label, index, seed), label)])[0]


def load_image(item: str, seed: int = DEFAULT_SEED) -> Image.Image:
    """The image of one item ('split/classname/index') as a 64x64 RGB PIL image; deterministic."""
    return to_pil(render_item(item, seed))


def shapes_splits(sizes: dict[str, int] | None = None) -> dict[str, list[tuple[str, int]]]:
    """{split: [(item, label)]} with `sizes[split]` images per class, class-major order."""
    sizes = SPLIT_SIZES if sizes is None else sizes
    return {split: [(item_name(split, label, i), label) for label in range(len(CLASSES)) for i in range(n)]
            for split, n in sizes.items()}


def shapes_dataset_spec(seed: int = DEFAULT_SEED, sizes: dict[str, int] | None = None) -> DatasetSpec:
    """The built-in `shapes` dataset: 16 classes, 64/16/64 images per class in train/val/test by default.

    `sizes` keeps only the first n images per class of each split (a reduced dataset for quick runs); the
    images kept are identical to those of the full dataset.
    """
    sizes = dict(SPLIT_SIZES if sizes is None else sizes)
    too_big = {split: n for split, n in sizes.items() if split not in SPLIT_SIZES or not 0 < n <= SPLIT_SIZES[split]}
    if too_big:
        raise ClipBridgeError(f"shapes: split sizes {too_big} are not within {SPLIT_SIZES}")
    reduced = "" if sizes == SPLIT_SIZES else ":sizes=" + ",".join(f"{k}{v}" for k, v in sizes.items())
    return DatasetSpec(
        name=DATASET_NAME, classnames=list(CLASSNAMES), original_classnames=list(CLASSNAMES),
        splits=shapes_splits(sizes), split_source=f"procedural:extract/shapes.py:seed={seed}{reduced}",
        load_image=functools.partial(load_image, seed=seed), attrs={"shapes_seed": seed})


@register_dataset(DATASET_NAME)
def read_shapes(root: Path | None = None, *, split_file: Path | None = None, download: bool = False
                ) -> DatasetSpec:
    """Registry reader: needs no files (root and download are ignored); its splits are built in."""
    if split_file is not None:
        raise ClipBridgeError(f"dataset shapes: its splits are built in; --split-file {split_file} does not apply")
    return shapes_dataset_spec()
