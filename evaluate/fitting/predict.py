"""Classify new images with a fitted run: encode them with the run's model and weights (the plain view, as
the test images were encoded), apply the fitted method, keep the top-k classes.

Weights are checked, never assumed: a checkpoint file must have the SHA-256 the run's cache recorded, a tag
must be the cache's tag. Probabilities are the softmax of the method's logits; for SeMoBridge(-T), whose
blended logits are sums of exponentials rather than log-odds, they rank the classes but are not calibrated.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.reporting.files import write_text_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Prediction:
    """One image: its path, the top-k classes (best first) and their probabilities."""

    path: str
    classes: list[str]
    probabilities: list[float]


def image_files(images: Sequence[str | Path] | str | Path) -> list[Path]:
    """Image files named, or found (recursively, sorted) in the folders named; a path that is neither is an
    error naming it."""
    items = [images] if isinstance(images, (str, Path)) else list(images)
    if not items:
        raise ClipBridgeError("no image given (pass image files or a folder)")
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ClipBridgeError(f"no image file ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise ClipBridgeError(f"image not found: {item}")
    return files


def run_weights(run, pretrained: str | None) -> str:
    """The --pretrained to load the run's model with: `pretrained` (checked) or the one its cache was
    extracted with. A file must have the SHA-256 the cache recorded; a tag must be the cache's tag."""
    from clipbridge.cache.weights import is_checkpoint_path, weights_of

    weights = run.meta.get("weights") or {}
    source = pretrained or weights.get("source") or weights.get("pretrained")
    if not source:
        raise ClipBridgeError("this run does not record its weights (fitted before clipbridge recorded them); "
                              "fit it again")
    recorded = weights.get("sha256", "")
    if recorded:
        if not is_checkpoint_path(source):
            if source == weights.get("pretrained"):        # a bundled tag: the cache recorded its file's hash
                return source
            raise ClipBridgeError(f"the run's cache was extracted with weights {weights.get('pretrained')} (sha256 "
                                  f"{recorded[:12]}), not the tag {source!r}")
        if not Path(source).expanduser().is_file():
            raise ClipBridgeError(f"the run's weights {source} are not there any more; pass --pretrained FILE (the "
                                  f"file with sha256 {recorded[:12]})")
        found = weights_of(source).sha256
        if found != recorded:
            raise ClipBridgeError(f"{source} (sha256 {found[:12]}) is not the weights the run's cache was extracted "
                                  f"with ({weights.get('pretrained')}, sha256 {recorded[:12]})")
        return source
    if source != weights.get("pretrained"):
        raise ClipBridgeError(f"the run's cache was extracted with {weights.get('pretrained')!r}, not {source!r}")
    return source


def predict_images(run, images, *, topk: int = 5, seed: int | None = None, pretrained: str | None = None,
                   device: str = "auto", batch_size: int = 64) -> list[Prediction]:
    """Top-k predictions of `run` (seed `seed`, default the first) for image files or folders."""
    import torch

    from clipbridge.bridge.registry import get_method
    from clipbridge.extract.datasets.registry import load_rgb
    from clipbridge.extract.models import load_model
    from clipbridge.extract.run import READ_ERRORS, encode_images

    if topk < 1:
        raise ClipBridgeError(f"--topk must be at least 1, got {topk}")
    seeds = run.seeds
    if seed is not None and seed not in seeds:
        raise ClipBridgeError(f"the run was fitted with seeds {', '.join(map(str, seeds))}, not {seed}")
    index = seeds.index(seed) if seed is not None else 0
    files = image_files(images)
    source = run_weights(run, pretrained)
    weights = run.meta["weights"]
    loaded = load_model(weights["model"], source, device=device, precision=weights.get("precision") or "fp32")
    state = run.state.on(str(loaded.device))
    method = get_method(run.method)
    names, k = run.classnames, min(topk, len(run.classnames))
    out: list[Prediction] = []
    for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        views = []
        for path in batch:
            try:
                views.append(loaded.preprocess(load_rgb(path)))
            except READ_ERRORS as error:
                raise ClipBridgeError(f"cannot read image {path} ({type(error).__name__}: {error})") from None
        queries = torch.from_numpy(encode_images(loaded, torch.stack(views).unsqueeze(1)))[:, 0]
        logits = method.logits(state, queries.to(device=loaded.device, dtype=torch.float32))[index]
        probabilities, classes = torch.softmax(logits.double(), -1).topk(k, dim=-1)
        for path, p, c in zip(batch, probabilities.tolist(), classes.tolist()):
            out.append(Prediction(str(path), [names[i] for i in c], [round(x, 6) for x in p]))
    return out


def write_predictions(predictions: list[Prediction], out: Path) -> Path:
    """CSV (path, class_1, probability_1, ...) or JSONL (one object per image) by the file's extension,
    written atomically."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ClipBridgeError(f"--out {out}: use a .csv or .jsonl file")
    if suffix == ".jsonl":
        text = "".join(json.dumps(asdict(p)) + "\n" for p in predictions)
    else:
        k = max((len(p.classes) for p in predictions), default=0)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path"] + [f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "probability")])
        for p in predictions:
            writer.writerow([p.path] + [v for pair in zip(p.classes, p.probabilities) for v in pair])
        text = buffer.getvalue()
    return write_text_atomic(out, text)
