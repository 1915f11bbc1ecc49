"""A synthetic but valid cache with CLIP-like structure, for tests, demos and benchmarks without CLIP.

Generative model (all draws from one numpy Generator seeded with `seed`, so a seed fixes the file):
- Wt [W, D] = U diag(s) V^T with orthonormal U, V and singular values s spread over a factor of 20
  (some directions shrink a lot after projection, as in CLIP; W != D is fine). With projection_bias > 0
  the text projection is affine, as SigLIP's: projected = e Wt + b with a random b [D] of that norm (drawn
  from its own generator, so every other draw is the same as without it).
- Classes come in super-classes (groups of about four). Class c has an EOS direction
  e_c = shared text mean + super-class direction + own direction; its P prompts are
  e_{c,p} = |e| * n(e_c + template_p + noise) (templates shared by all classes), projected e_{c,p} Wt.
- Images of class c sit around n(a * T_c + b * u_c) where T_c is the class's zero-shot text prototype and
  u_c an image-only direction the text never sees (shared inside a super-class as well, which is what
  makes zero-shot confuse neighbours); every image is shifted by one shared modality-gap vector g
  (‖g‖ = `gap`, a random direction), gets isotropic noise and is scaled to a raw norm around 10 (CLIP's
  encode_image is not normalised). The plain view of an image is that point; the copies of an augmented
  view family (train images only, e.g. {"flip": 1, "tip": 10}) are the plain view plus small noise.
So zero-shot is well above chance but imperfect, and a few labelled images per class help.

The gap is known by construction: with m_c = n(a T_c + b u_c + ...) the noise-free image centre and
ε ~ N(0, σ²/512 · I_D) the noise, an image's normalised embedding n(g + m_c + ε) ≈ (g + m_c + ε) / r_c with
r_c = sqrt(‖g + m_c‖² + σ² D / 512) (‖g + m_c + ε‖² concentrates there, relative spread O(1/sqrt(D))),
so the centroid of the normalised test images is mean_i (g + m_{y_i}) / r_{y_i} up to the noise's mean
(O(σ / sqrt(N)) over N images). Its distance to the centroid of the class text prototypes T̄ (all prompts
of both text sets) is recorded as attrs["synthetic"]["expected_centroid_gap"] (test split).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.schema import list_fingerprint
from clipbridge.cache.writer import CacheWriter

TEMPLATES = ("a photo of a {}.", "itap of a {}.", "a bad photo of the {}.", "a origami {}.",
             "a photo of the large {}.", "a {} in a video game.", "art of the {}.", "a photo of the small {}.")

# Strengths of the generative model's parts (see the module docstring).
_TEXT_MEAN, _TEXT_SUPER, _TEXT_OWN, _TEXT_TEMPLATE, _TEXT_NOISE = 1.0, 0.9, 0.7, 0.35, 0.25
_EOS_NORM, _IMAGE_NORM = 25.0, 10.0
_IMAGE_TEXT, _IMAGE_OWN, _IMAGE_SUPER, _IMAGE_NOISE, _VIEW_NOISE = 0.6, 0.3, 0.5, 3.5, 0.15
DEFAULT_GAP = 2.0   # ‖g‖, the length of the shared modality-gap vector
_SUPER_CLASS_SIZE = 4
# Image noise has the same size along any direction whatever D is (its total norm is _IMAGE_NOISE at D=512).
_REFERENCE_DIM = 512


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _projection(rng: np.random.Generator, width: int, dim: int) -> np.ndarray:
    """Wt [W, D] = U diag(s) V^T with orthonormal U [W, r], V [D, r] (r = min(W, D)) and singular values
    s from 1 down to 0.05, scaled so that projected text has a norm near 10."""
    rank = min(width, dim)
    singular = np.geomspace(1.0, 0.05, rank)
    u = np.linalg.qr(rng.standard_normal((width, rank)))[0]
    v = np.linalg.qr(rng.standard_normal((dim, rank)))[0]
    scale = 10.0 / _EOS_NORM / np.sqrt(np.mean(singular**2))
    return (u * (singular * scale)) @ v.T


def _text(rng: np.random.Generator, classes: int, prompts: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """EOS features [C, P, W] and the super-class of each class [C]."""
    supers = rng.permutation(classes) % max(1, classes // _SUPER_CLASS_SIZE)
    mean = _unit(rng.standard_normal(width))
    super_dirs = _unit(rng.standard_normal((supers.max() + 1, width)))
    own = _unit(rng.standard_normal((classes, width)))
    centre = _TEXT_MEAN * mean + _TEXT_SUPER * super_dirs[supers] + _TEXT_OWN * own        # [C, W]
    templates = _TEXT_TEMPLATE * _unit(rng.standard_normal((prompts, width)))              # [P, W]
    noise = _TEXT_NOISE * _unit(rng.standard_normal((classes, prompts, width)))
    eos = _EOS_NORM * _unit(centre[:, None, :] + templates[None] + noise)                  # [C, P, W]
    return eos, supers


def _images(rng: np.random.Generator, centres: np.ndarray, gap: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Raw plain-view image embeddings [N, D] of the given labels around the class centres [C, D]."""
    n, dim = labels.size, centres.shape[1]
    base = gap + centres[labels] + _IMAGE_NOISE * rng.standard_normal((n, dim)) / np.sqrt(_REFERENCE_DIM)
    scale = _IMAGE_NORM * rng.uniform(0.85, 1.15, size=(n, 1)) / np.linalg.norm(base, axis=1, keepdims=True)
    return (base * scale).astype(np.float32)


def _augmented(rng: np.random.Generator, plain: np.ndarray, copies: int) -> np.ndarray:
    """`copies` augmented views [N, copies, D] of plain views [N, D]: the plain view plus small noise."""
    n, dim = plain.shape
    noise = _VIEW_NOISE * _IMAGE_NORM * rng.standard_normal((n, copies, dim)) / np.sqrt(dim)
    return (plain[:, None, :] + noise).astype(np.float32)


def expected_centroid_gap(centres: np.ndarray, gap: np.ndarray, labels: np.ndarray,
                          prototypes: np.ndarray) -> float:
    """‖mean_i (g + m_{y_i}) / r_{y_i} − mean_c T̄_c‖ with r_c = sqrt(‖g + m_c‖² + σ² D / 512): the centroid gap
    the normalised images of `labels` [N] should show (module docstring); centres m [C, D], gap g [D],
    prototypes T̄ [C, D]."""
    shifted = gap + centres                                                             # [C, D]
    radius = np.sqrt((shifted**2).sum(-1) + _IMAGE_NOISE**2 * centres.shape[1] / _REFERENCE_DIM)
    image_centroid = (shifted / radius[:, None])[labels].mean(0)
    return float(np.linalg.norm(image_centroid - prototypes.mean(0)))


def _balanced_labels(rng: np.random.Generator, classes: int, count: int) -> np.ndarray:
    """`count` labels cycling through all classes, shuffled."""
    return rng.permutation(np.arange(count) % classes)


def write_synthetic_cache(path: str | Path, *, classes: int, train_per_class: int, dim: int, width: int,
                          val: int, test: int, families: dict[str, int] | None = None, prompts: int = 3,
                          seed: int = 0, dataset: str = "synthetic", overwrite: bool = False,
                          projection_bias: float = 0.0, gap: float = DEFAULT_GAP,
                          named_cupl: tuple[str, ...] = ()) -> Path:
    """Write a valid synthetic cache (splits train [C*train_per_class], val [val], test [test]); its path.

    Every image has the plain view; train images also have the augmented view `families` {name: copies}
    (e.g. {"flip": 1, "tip": 10}). Text sets: "coop" (one template per class, the first of "ensemble"),
    "ensemble" (`prompts` templates per class) and "cupl" (`prompts` sentences per class), as an extraction
    with --prompts coop,ensemble,cupl would store, plus "cupl:NAME" for each name of `named_cupl` (the same
    sentences' embeddings, as `extract --cupl NAME=FILE` would add them; the paper recipes read cupl:ape and
    cupl:semobridge on the 11 datasets). Coverage: every image. projection_bias: the norm of the
    bias b of an affine text projection (0: linear, no bias stored). `gap` = ‖g‖, the modality-gap vector's
    length (0: no shared shift); the centroid gap it should produce is recorded (module docstring).
    """
    if not gap >= 0:
        raise ClipBridgeError(f"synthetic cache {path}: gap must be at least 0, got {gap}")
    families = dict(families or {})
    for name, value, low in (("classes", classes, 2), ("train_per_class", train_per_class, 1), ("dim", dim, 2),
                             ("width", width, 2), ("val", val, 1), ("test", test, 1), ("prompts", prompts, 1),
                             *((f"copies of {f}", n, 1) for f, n in families.items())):
        if int(value) < low:
            raise ClipBridgeError(f"synthetic cache {path}: {name} must be at least {low}, got {value}")
    if "plain" in families:
        raise ClipBridgeError(f"synthetic cache {path}: every image has the plain view; list augmented families only")
    bad_names = [n for n in named_cupl if not n or not n.replace("_", "").replace("-", "").isalnum()]
    if bad_names:
        raise ClipBridgeError(f"synthetic cache {path}: named CuPL sets need plain names, got {bad_names}")
    if not projection_bias >= 0:
        raise ClipBridgeError(f"synthetic cache {path}: projection_bias must be >= 0, got {projection_bias}")
    rng = np.random.default_rng(seed)
    projection = _projection(rng, width, dim)                                             # [W, D]
    bias = None
    if projection_bias > 0:
        bias = (projection_bias * _unit(np.random.default_rng([seed, 1]).standard_normal(dim))).astype(np.float32)
    eos, supers = _text(rng, classes, 2 * prompts, width)                                 # [C, 2P, W]
    projected = (eos.reshape(-1, width) @ projection).reshape(classes, 2 * prompts, dim)   # [C, 2P, D]
    if bias is not None:
        projected = projected + bias
    prototypes = _unit(_unit(projected).mean(axis=1))                                     # [C, D]
    super_dirs = _unit(rng.standard_normal((supers.max() + 1, dim)))
    own = _unit(rng.standard_normal((classes, dim)))
    centres = _unit(_IMAGE_TEXT * prototypes + _IMAGE_OWN * own + _IMAGE_SUPER * super_dirs[supers])
    gap_vector = float(gap) * _unit(rng.standard_normal(dim))
    labels = {
        "train": np.repeat(np.arange(classes), train_per_class),
        "val": _balanced_labels(rng, classes, val),
        "test": _balanced_labels(rng, classes, test),
    }
    names = [f"class {c:03d}" for c in range(classes)]
    attrs = {"model": "synthetic", "pretrained": f"seed{seed}", "dataset": dataset, "image_size": 0,
             "precision": "fp32", "split_source": f"synthetic (seed {seed})",
             "synthetic": {"classes": classes, "train_per_class": train_per_class, "dim": dim, "width": width,
                           "val": val, "test": test, "families": families, "prompts": prompts, "seed": seed,
                           "gap": float(gap), "expected_centroid_gap":
                               expected_centroid_gap(centres, gap_vector, labels["test"], prototypes)}}
    if bias is not None:
        attrs["synthetic"]["projection_bias"] = projection_bias
    if named_cupl:
        attrs["synthetic"]["named_cupl"] = list(named_cupl)
    with CacheWriter(path, attrs=attrs, overwrite=overwrite, restart=True) as writer:
        writer.write_model(projection.astype(np.float32), 100.0, projection_bias=bias)
        writer.write_classes(names, [n.replace(" ", "_") for n in names])
        sets = {"coop": (slice(0, 1), list(TEMPLATES[:1])),          # the first "ensemble" template
                "ensemble": (slice(0, prompts), list(TEMPLATES)),
                "cupl": (slice(prompts, 2 * prompts), [f"{{}} seen in sentence {i}." for i in range(prompts)])}
        sets.update({f"cupl:{name}": sets["cupl"] for name in named_cupl})
        for set_name, (part, texts) in sets.items():
            count = part.stop - part.start
            writer.write_text(set_name, [texts[p % len(texts)].format(names[c]) for c in range(classes)
                                         for p in range(count)],
                              np.repeat(np.arange(classes), count), projected[:, part].reshape(-1, dim),
                              eos[:, part].reshape(-1, width), attrs={"source": "synthetic"})
        for split, split_labels in labels.items():
            n = split_labels.size
            paths = [f"{split}/{i:06d}" for i in range(n)]
            writer.write_list(split, split_labels, list_fingerprint(paths, split_labels))
            writer.ensure_split(split, source=np.arange(n), labels=split_labels, paths=paths)
            plain = _images(rng, centres, gap_vector, split_labels)
            writer.write_family(split, "plain", plain[:, None], recipe={"family": "plain", "synthetic": True})
            for family, copies in (families.items() if split == "train" else ()):
                writer.write_family(split, family, _augmented(rng, plain, copies),
                                    recipe={"family": family, "synthetic": "plain view + noise", "seed": seed})
        writer.set_attrs(coverage={"train": "all", "pairs": None, "val": "all"})
        return writer.finish()


def synthetic_settings(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The generator's settings a cache's root attrs record (attrs["synthetic"], stored as JSON text), or
    None for a cache of real images."""
    settings = attrs.get("synthetic")
    if isinstance(settings, str):
        try:
            settings = json.loads(settings)
        except ValueError:
            return None
    return settings if isinstance(settings, dict) and "classes" in settings else None


def synthetic_command(settings: dict[str, Any], dataset: str, path: str | Path, families: dict[str, int]) -> str:
    """The generator command that writes the synthetic cache of `settings` (its attrs["synthetic"]) and
    `dataset` again, to `path`, with the augmented view `families` {name: copies} added to those it has (an extract command
    cannot add views to a cache that no image folder backs)."""
    merged = {**dict(settings.get("families") or {}), **families}
    words = ["python -m clipbridge.cache.synthetic", "--classes", str(settings["classes"]), "--shots",
             str(settings["train_per_class"]), "--dim", str(settings["dim"]), "--width", str(settings["width"]),
             "--val", str(settings["val"]), "--test", str(settings["test"]), "--prompts", str(settings["prompts"]),
             "--seed", str(settings["seed"]), "--gap", repr(float(settings.get("gap", DEFAULT_GAP)))]
    if dataset != "synthetic":
        words += ["--dataset", shlex.quote(dataset)]
    if settings.get("projection_bias"):
        words += ["--projection-bias", repr(float(settings["projection_bias"]))]
    if settings.get("named_cupl"):
        words += ["--named-cupl", ",".join(settings["named_cupl"])]
    words += ["--families", ",".join(f"{name}:{copies}" for name, copies in merged.items()),
              "--overwrite", "--out", shlex.quote(str(path))]
    return " ".join(words)


def _parse_families(text: str) -> dict[str, int]:
    """'flip:1,tip:10' -> {'flip': 1, 'tip': 10}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, copies = part.partition(":")
        try:
            out[name.strip()] = int(copies or 1)
        except ValueError:
            raise ClipBridgeError(f"--families {text!r}: expected name:copies, e.g. flip:1,tip:10") from None
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m clipbridge.cache.synthetic --classes C --shots K --dim D --width W --val N --test N --out X.h5`."""
    parser = argparse.ArgumentParser(prog="python -m clipbridge.cache.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, required=True, help="number of classes C")
    parser.add_argument("--shots", type=int, required=True,
                        help="train images per class (the most shots a few-shot run can draw)")
    parser.add_argument("--dim", type=int, default=512, help="joint embedding size D")
    parser.add_argument("--width", type=int, default=512, help="text width W (size of the EOS feature)")
    parser.add_argument("--val", type=int, default=1000, help="validation images")
    parser.add_argument("--test", type=int, default=2000, help="test images")
    parser.add_argument("--families", default="", help="augmented view families of the train images with their "
                        "copies, e.g. flip:1,tip:10 (every image has the plain view)")
    parser.add_argument("--prompts", type=int, default=3, help="prompts per class in each text set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gap", type=float, default=DEFAULT_GAP, help="length of the modality-gap vector g")
    parser.add_argument("--dataset", default="synthetic", help="dataset name recorded in the cache")
    parser.add_argument("--projection-bias", type=float, default=0.0,
                        help="norm of the bias of an affine text projection, as SigLIP's (0: linear)")
    parser.add_argument("--named-cupl", default="", help="also store the CuPL sentences as these named sets "
                        "cupl:NAME (comma-separated, e.g. ape,semobridge: the sets the paper recipes read)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--out", required=True, help="cache file to write (.h5)")
    args = parser.parse_args(argv)
    try:
        path = write_synthetic_cache(args.out, classes=args.classes, train_per_class=args.shots, dim=args.dim,
                                     width=args.width, val=args.val, test=args.test,
                                     families=_parse_families(args.families),
                                     prompts=args.prompts, seed=args.seed, dataset=args.dataset,
                                     overwrite=args.overwrite, projection_bias=args.projection_bias, gap=args.gap,
                                     named_cupl=tuple(filter(None, (n.strip() for n in args.named_cupl.split(",")))))
    except ClipBridgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
