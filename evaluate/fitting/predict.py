"""Classify new images with a fitted run: encode them with the run's model and weights (the plain view, as
the test images were encoded), apply the fitted method, keep the top-k classes.

Weights are checked, never assumed: a checkpoint file must have the SHA-256 the run's cache recorded, a tag
must be the cache's tag. Probabilities are softmax(logits / T) with the temperature T the run fitted on its
validation queries (evaluate/fitting/calibrate.py); every prediction names the calibration it carries
("temperature 0.0412", or "none" for --calibration none and for runs saved before calibration existed).
With a coverage level, each image also gets its conformal prediction set (evaluate/fitting/conformal_sets.py),
calibrated on held-out labelled images of the run's cache.

A folder is read recursively (images/cat/2024/x.jpg is read). An unreadable image stops the run with one line
naming it, unless skip_unreadable: then it gets a row with its error and no classes.
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
    """One image: its path, the top-k classes (best first), their probabilities, the calibration they carry,
    the conformal prediction set (classes in probability order; None when no coverage was asked) and the
    read error (None when the image was read; then classes and probabilities are empty)."""

    path: str
    classes: list[str]
    probabilities: list[float]
    calibration: str = "none"
    prediction_set: list[str] | None = None
    error: str | None = None


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


def load_run_model(run, source: str, device: str):
    """The open_clip model (extract.models.LoadedModel) of `run`'s weights from `source` (run_weights' checked
    file or tag), on `device`, at the precision the run's cache was encoded with."""
    from clipbridge.extract.models import load_model

    weights = run.meta["weights"]
    return load_model(weights["model"], source, device=device, precision=weights.get("precision") or "fp32")


def predict_images(run, images, *, topk: int = 5, seed: int | None = None, pretrained: str | None = None,
                   device: str = "auto", batch_size: int = 64, calibration: str | None = None,
                   coverage: float | None = None, conformal_score: str = "lac", conformal: str = "marginal",
                   cache=None, skip_unreadable: bool = False, note=lambda text: None) -> list[Prediction]:
    """Top-k predictions of `run` (seed `seed`, default the first) for image files or folders, with the run's
    calibration (or `calibration`: "temperature" | "none") and, with `coverage`, conformal sets calibrated on
    the held-out images of `cache` (default: the run's, found as Run.open_cache finds it). `note` receives
    one line on the calibration and one on the sets."""
    from clipbridge.bridge.registry import get_method
    from clipbridge.evaluate.fitting.calibrate import run_calibration
    from clipbridge.evaluate.fitting.conformal_sets import check_conformal, fit_threshold, holdout

    if topk < 1:
        raise ClipBridgeError(f"--topk must be at least 1, got {topk}")
    seeds = run.seeds
    if seed is not None and seed not in seeds:
        raise ClipBridgeError(f"the run was fitted with seeds {', '.join(map(str, seeds))}, not {seed}")
    index = seeds.index(seed) if seed is not None else 0
    chosen = run_calibration(run.state, len(seeds), calibration)
    if coverage is not None:
        check_conformal(coverage, conformal_score, conformal)
    files = image_files(images)
    source = run_weights(run, pretrained)
    sets = None
    if coverage is not None:                      # the held-out images are read before any image is encoded
        held = holdout(cache if cache is not None else run.open_cache(), run.meta, seeds[index])
        sets = fit_threshold(run.state, index, held, chosen, coverage, conformal_score, conformal, run.classnames)
    note(f"probabilities: {chosen.label(index)} ({chosen.note})")
    if sets is not None:
        note(f"prediction sets: {sets.describe()}")
    encoded = _encoded_batches(run, files, source, device, batch_size, skip_unreadable)
    method = get_method(run.method)
    names, k, label = run.classnames, min(topk, len(run.classnames)), chosen.label(index)
    out: list[Prediction] = []
    for batch, queries, errors, state in encoded:
        row = {j: i for i, j in enumerate(j for j in range(len(batch)) if j not in errors)}
        if row:
            probabilities = chosen.probabilities(method.logits(state, queries)[index], index)     # [n, C]
            top, classes = probabilities.topk(k, dim=-1)
            members = sets.sets(probabilities) if sets is not None else None
        for j, path in enumerate(batch):
            if j in errors:
                out.append(Prediction(str(path), [], [], label, None, errors[j]))
                continue
            i = row[j]
            members_of = None
            if members is not None:
                order = probabilities[i].argsort(descending=True).tolist()
                members_of = [names[c] for c in order if bool(members[i, c])]
            out.append(Prediction(str(path), [names[c] for c in classes[i].tolist()],
                                  [round(x, 6) for x in top[i].tolist()], label, members_of))
    return out


def _encoded_batches(run, files: list[Path], source: str, device: str, batch_size: int, skip_unreadable: bool):
    """Yield (batch paths, plain-view embeddings [n, D] of its readable images, {position: error} of the
    unreadable ones, the state on the model's device); an unreadable image without skip_unreadable is a
    one-line error naming it and the option."""
    import torch

    from clipbridge.extract.datasets.registry import load_rgb
    from clipbridge.extract.run import READ_ERRORS, encode_images

    loaded = load_run_model(run, source, device)
    state = run.state.on(str(loaded.device))
    for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        views, errors = [], {}
        for j, path in enumerate(batch):
            try:
                views.append(loaded.preprocess(load_rgb(path)))
            except READ_ERRORS as error:
                reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
                if not skip_unreadable:
                    raise ClipBridgeError(f"cannot read image {path} ({reason}); pass --skip-unreadable to classify "
                                          "the other images and list the unreadable ones") from None
                errors[j] = reason
        queries = None
        if views:
            queries = torch.from_numpy(encode_images(loaded, torch.stack(views).unsqueeze(1)))[:, 0]
            queries = queries.to(device=loaded.device, dtype=torch.float32)
        yield batch, queries, errors, state


def write_predictions(predictions: list[Prediction], out: Path) -> Path:
    """CSV or JSONL (one object per image, the Prediction's fields) by the file's extension, written
    atomically. CSV columns: path, calibration, class_1, probability_1, ..., then prediction_set (classes
    joined by "|") and set_size when sets were asked, and error when an image was unreadable."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ClipBridgeError(f"--out {out}: use a .csv or .jsonl file")
    if suffix == ".jsonl":
        text = "".join(json.dumps(asdict(p)) + "\n" for p in predictions)
    else:
        k = max((len(p.classes) for p in predictions), default=0)
        with_sets = any(p.prediction_set is not None for p in predictions)
        with_errors = any(p.error is not None for p in predictions)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "calibration"]
                        + [f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "probability")]
                        + (["prediction_set", "set_size"] if with_sets else []) + (["error"] if with_errors else []))
        for p in predictions:
            pairs = [v for pair in zip(p.classes, p.probabilities) for v in pair]
            pairs += [""] * (2 * k - len(pairs))
            extra = (["|".join(p.prediction_set or []), "" if p.prediction_set is None else len(p.prediction_set)]
                     if with_sets else []) + ([p.error or ""] if with_errors else [])
            writer.writerow([p.path, p.calibration] + pairs + extra)
        text = buffer.getvalue()
    return write_text_atomic(out, text)
