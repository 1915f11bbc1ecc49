"""Export a fitted run as one TorchScript file that plain torch loads (no clipbridge, no open_clip):
preprocessed images [B, 3, H, W] -> class probabilities [B, C].

The file holds the run's image encoder (its open_clip model and weights, loaded as `predict` loads them),
the fitted method's head for one seed (its `logits`) and the run's temperature:

    probabilities = softmax(logits(state, encode_image(images))[seed] / temperature[seed])

computed as `predict` computes them (float64 softmax), returned as float32. Its metadata (an extra file
METADATA_NAME of the TorchScript archive, JSON) says how to preprocess an image (size, mean, std,
interpolation, resize and crop), the class names in column order, and where the numbers came from
(method, run, seed, model, weights and their SHA-256, calibration).

TorchScript tracing, not torch.export: with torch 2.14, torch.export of the classifier stops at a
data-dependent guard ("Could not guard on data-dependent expression") for every registered method (the
methods' logits check their inputs with Python branches on tensor values, e.g. the zero-row refusal of
bridge.features.normalize_rows); tracing runs such checks once, on the example batch, and records the tensor
operations. torch 2.14 marks torch.jit.save/load deprecated (a FutureWarning; they still work). A trace is
only as good as its example, so `export_run` checks the traced model against the eager one on a batch of
another size before writing; a head whose trace does not reproduce it is refused in one line. The traced
model runs on the device it was exported on (`--device`).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clipbridge.errors import ClipBridgeError
from clipbridge.bridge.calibration import calibrated_probabilities
from clipbridge.evaluate.reporting.files import atomic_file

METADATA_NAME = "clipbridge.json"
EXPORT_FORMAT = "clipbridge-classifier/1"
#: Largest |traced − eager| probability difference accepted by the check before writing, and largest difference
#: of the logits behind them (recovered as temperature × log-probability, up to each row's constant): a high
#: temperature flattens probabilities until a wrong trace hides inside the first tolerance, never the second.
TRACE_TOLERANCE, LOGIT_TOLERANCE = 1e-5, 1e-3
#: Batch sizes of the example the model is traced with and of the batch it is checked on.
TRACE_BATCH, CHECK_BATCH = 2, 3


def calibration_of(state) -> dict[str, Any]:
    """The run's calibration as the file's metadata states it: state.info["calibration"] ({"method":
    "temperature" | "none", "temperature": [S floats], ...}) with the method and temperatures that
    evaluate.fitting.calibrate.run_calibration applies (a run without one: "none", temperature 1.0 for every
    seed)."""
    from clipbridge.evaluate.fitting.calibrate import run_calibration

    applied = run_calibration(state, len(state.hparams))
    return {**(state.info.get("calibration") or {}), "method": applied.method, "temperature": applied.temperature}


class ExportedClassifier(nn.Module):
    """images [B, 3, H, W] (preprocessed, float) -> probabilities [B, C] float32 of one seed's fit.

    encoder: the open_clip model (its `visual` tower becomes the registered submodule; its `encode_image`
    is what runs, as in predict); state: the run's FittedState (all seeds, its tensors registered as
    buffers); seed_index: the seed's row of the method's [S, N, C] logits; temperature: that seed's. Every
    seed's head tensors travel in the file (a method's `logits` scores all seeds at once, as in predict,
    which keeps the two equal); they are small beside the encoder.
    """

    def __init__(self, encoder, method, state, seed_index: int, temperature: float, dtype):
        super().__init__()
        self.visual = encoder.visual
        self.encode_image = encoder.encode_image           # a bound method: not a submodule
        self.method, self.state, self.seed_index, self.input_dtype = method, state, seed_index, dtype
        for index, tensor in enumerate(state.tensors.values()):
            self.register_buffer(f"head_{index}", tensor)
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=torch.float64))

    def forward(self, images):
        features = self.encode_image(images.to(self.input_dtype), normalize=False).float()     # [B, D]
        logits = self.method.logits(self.state, features)[self.seed_index]                     # [B, C]
        return calibrated_probabilities(logits, self.temperature).float()


def preprocess_metadata(loaded) -> dict[str, Any]:
    """How an image becomes the model's input, from open_clip's eval preprocess config: size [H, W], mean,
    std, interpolation, resize_mode ('shortest': the shorter side to the size, then a center crop), the
    colour mode, and the transforms as open_clip prints them."""
    cfg = dict(loaded.model.visual.preprocess_cfg)
    size = cfg["size"] if isinstance(cfg["size"], (tuple, list)) else (cfg["size"], cfg["size"])
    return {"size": [int(s) for s in size], "mode": cfg.get("mode", "RGB"),
            "mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
            "interpolation": cfg.get("interpolation") or "bicubic", "resize_mode": cfg.get("resize_mode") or "shortest",
            "crop": "center", "fill_color": cfg.get("fill_color", 0), "antialias": True,
            "transforms": [line.strip() for line in str(loaded.preprocess).splitlines()[1:-1]]}


def export_metadata(run, loaded, seed: int, calibration: dict[str, Any], device: str) -> dict[str, Any]:
    """The file's metadata (JSON-able): input, output, preprocessing, class names and provenance."""
    index = run.seeds.index(seed)
    weights = run.meta.get("weights") or {}
    height, width = preprocess_metadata(loaded)["size"]
    return {
        "format": EXPORT_FORMAT,
        "input": f"preprocessed images [B, 3, {height}, {width}] float32 (see preprocess)",
        "output": "class probabilities [B, C] float32, columns in classnames order",
        "preprocess": preprocess_metadata(loaded),
        "classnames": run.classnames,
        "method": run.method, "run": str(Path(run.path).resolve()) if run.path else None, "seed": seed, "seeds": run.seeds,
        "shots": run.meta.get("shots"), "recipe": run.meta.get("recipe"), "protocol": run.meta.get("protocol"),
        "dataset": run.meta.get("dataset"), "cache_id": run.meta.get("cache_id"),
        "model": weights.get("model"), "pretrained": weights.get("pretrained"),
        "weights_sha256": weights.get("sha256", ""), "precision": loaded.precision,
        "calibration": {**calibration, "temperature_used": float(calibration["temperature"][index])},
        "device": device, "torch": torch.__version__, "format_note": "TorchScript: torch.jit.load(path)",
    }


def build_classifier(run, *, seed: int | None = None, pretrained: str | None = None, device: str = "cpu"):
    """(ExportedClassifier of `run`'s seed `seed` (default its first), the LoadedModel, the seed)."""
    from clipbridge.bridge.registry import get_method
    from clipbridge.evaluate.fitting.predict import load_run_model, run_weights

    seed = run.seeds[0] if seed is None else seed
    if seed not in run.seeds:
        raise ClipBridgeError(f"the run was fitted with seeds {', '.join(map(str, run.seeds))}, not {seed}")
    calibration = calibration_of(run.state)
    loaded = load_run_model(run, run_weights(run, pretrained), device)
    index = run.seeds.index(seed)
    classifier = ExportedClassifier(loaded.model, get_method(run.method), run.state.on(str(loaded.device)), index,
                                    calibration["temperature"][index], loaded.dtype).eval()
    return classifier, loaded, seed, calibration


def logit_gap(expected: Tensor, found: Tensor, temperature: float) -> float:
    """Largest difference [B, C] -> float of the logits behind two probability tables: temperature × (log p −
    log q), each row centred on its mean over the classes both give a probability above 1e-30."""
    both = (expected > 1e-30) & (found > 1e-30)
    diff = torch.where(both, expected.double().log() - found.double().log(), torch.zeros((), dtype=torch.float64))
    centred = diff - diff.sum(-1, keepdim=True) / both.sum(-1, keepdim=True).clamp_min(1)
    return float((centred * both).abs().max()) * temperature


def trace_classifier(classifier, loaded, method: str):
    """The TorchScript trace of `classifier`, checked against it on a batch of another size; a method whose
    head the trace does not reproduce is one ClipBridgeError line."""
    height, width = preprocess_metadata(loaded)["size"]
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(TRACE_BATCH, 3, height, width, generator=generator).to(loaded.device)
    check = torch.randn(CHECK_BATCH, 3, height, width, generator=generator).to(loaded.device)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(classifier, (example,), check_trace=False)
            expected, found = classifier(check), traced(check)
    except Exception as error:  # noqa: BLE001  (whatever the tracer cannot follow: one line naming the method)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClipBridgeError(f"{method}: its head cannot be exported to TorchScript ({first})") from error
    same_shape = found.shape == expected.shape
    gap = float((expected - found).abs().max()) if same_shape else math.inf
    logits_gap = logit_gap(expected, found, float(classifier.temperature)) if same_shape else math.inf
    if not (gap <= TRACE_TOLERANCE and logits_gap <= LOGIT_TOLERANCE):
        gap = gap if gap > TRACE_TOLERANCE else logits_gap
        raise ClipBridgeError(f"{method}: its head cannot be exported to TorchScript (the traced model differs from "
                              f"the fitted one by {gap:.1e} on a batch of {CHECK_BATCH})")
    return traced


def export_run(run, out: str | Path, *, seed: int | None = None, pretrained: str | None = None,
               device: str = "cpu") -> dict[str, Any]:
    """Write `run` (one seed) to the TorchScript file `out` (atomically: a temp name, then renamed); returns
    the metadata written."""
    out = Path(out)
    classifier, loaded, seed, calibration = build_classifier(run, seed=seed, pretrained=pretrained, device=device)
    traced = trace_classifier(classifier, loaded, run.method)
    metadata = export_metadata(run, loaded, seed, calibration, str(loaded.device))
    with atomic_file(out, suffix=".tmp") as temporary, warnings.catch_warnings():
        # deprecated in torch 2.14, still the format that loads bare
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.save.* is deprecated", category=FutureWarning)
        torch.jit.save(traced, str(temporary), _extra_files={METADATA_NAME: json.dumps(metadata, indent=1)})
    return metadata
