"""The Python API: fit a method on a cache, score it, save it, and classify new images with it.

    import clipbridge as cb

    cache = cb.open_cache("cache/ViT-B-16--openai/dtd.h5")
    run = cb.fit(cache, method="semobridge-t", shots=16, seeds=[1, 2, 3])      # the paper recipe, protocol clean
    records = run.evaluate()                    # test accuracy per seed (the test split is read only here)
    run.save("runs")                            # runs/dtd/semobridge-t/shots16-seeds1-3-<id>/
    predictions = run.predict(["photo.jpg"], topk=5)      # encoded with the run's model and weights
    sets = run.predict(["photo.jpg"], coverage=0.9)       # + the conformal set holding the true class 90 % of the time
    run = cb.load_run("runs/dtd/semobridge-t/shots16-seeds1-3-<id>")

The command line (`clipbridge fit`, `evaluate`, `predict`) is a thin layer over these calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from clipbridge.bridge.recipes import DEFAULT_RECIPE
from clipbridge.errors import ClipBridgeError


@dataclass
class Run:
    """A fitted method: state (bridge.registry.FittedState, all seeds), meta (what it was fitted on: cache,
    model, weights, classes, shots, seeds, recipe, protocol, ...), overrides (the --hparam values given) and
    path (its folder once saved or loaded)."""

    state: Any
    meta: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def method(self) -> str:
        return self.state.method

    @property
    def seeds(self) -> list[int]:
        return list(self.meta["seeds"])

    @property
    def classnames(self) -> list[str]:
        return list(self.meta["classnames"])

    def open_cache(self, path: str | Path | None = None, *, cache_root: str | Path | None = "cache"):
        """The cache the run was fitted on (or the one at `path`, which must be the same extraction); without
        `path`, looked for where it was, beside the run and under `cache_root` (evaluate.fitting.cache_lookup)."""
        from clipbridge.cache.reader import open_cache

        if path is None:
            from clipbridge.evaluate.fitting.cache_lookup import find_run_cache

            return find_run_cache(self.meta["cache"], self.meta["cache_id"], self.path,
                                  cache_root)
        cache = open_cache(path)
        if str(cache.cache_id) != self.meta["cache_id"]:
            raise ClipBridgeError(f"cache {cache.path} (id {cache.cache_id}) is not the cache this run was fitted on "
                                  f"(id {self.meta['cache_id']}, {self.meta['cache']})")
        return cache

    def evaluate(self, cache=None, *, device: str = "auto", calibration: str | None = None,
                 coverage: float | None = None, conformal_score: str = "lac",
                 conformal: str = "marginal") -> list[dict[str, Any]]:
        """Score every seed on the cache's test split: one result record per seed (evaluate/reporting/records.py)
        with accuracy and the calibration metrics (ECE, NLL, Brier, mean confidence) before and after the run's
        calibration (`calibration` "none" reports the raw softmax as the calibrated one); with `coverage`
        (e.g. 0.9), also the empirical coverage and mean size of the conformal sets (conformal_score "lac" or
        "aps", conformal "marginal" or "classwise"; evaluate/fitting/conformal_sets.py)."""
        from clipbridge.bridge.devices import resolve_device
        from clipbridge.evaluate.fitting.calibrate import run_calibration
        from clipbridge.evaluate.fitting.conformal_sets import check_conformal, score_coverage
        from clipbridge.evaluate.fitting.scoring import test_records
        from clipbridge.evaluate.fitting.tasks import load_test

        if coverage is not None:
            check_conformal(coverage, conformal_score, conformal)
        chosen = run_calibration(self.state, len(self.seeds), calibration)       # refused before any work
        cache = cache if cache is not None else self.open_cache()
        target = str(resolve_device(device))
        queries, labels = load_test(cache, device=target, dtype=self.meta["dtype"])
        state = self.state.on(target)
        sets = None if coverage is None else score_coverage(state, cache, {**self.meta, "classnames": self.classnames},
                                                            queries, labels, chosen, coverage, conformal_score,
                                                            conformal)
        return test_records(state, {**self.meta, "device": target}, queries, labels, overrides=self.overrides,
                            calibration=calibration, coverage=sets)

    def save(self, root: str | Path = "runs") -> Path:
        """Write the run under root/<dataset>/<method>/ (atomically); returns and remembers its folder."""
        from clipbridge.evaluate.fitting.runs import save_run

        self.path = save_run(root, self.state, self.meta, self.overrides)
        return self.path

    def predict(self, images: Sequence[str | Path] | str | Path, *, topk: int = 5, seed: int | None = None,
                pretrained: str | None = None, device: str = "auto", batch_size: int = 64,
                calibration: str | None = None, coverage: float | None = None, conformal_score: str = "lac",
                conformal: str = "marginal", cache=None, skip_unreadable: bool = False) -> list:
        """Classify image files (a folder is read recursively) with the run's model and weights; top-k classes
        and probabilities per image, each carrying the calibration used (evaluate/fitting/predict.py). seed:
        which seed's fit (default the first); pretrained: the weights file, when it is no longer where the
        cache was extracted from; calibration: None (the run's), "temperature" or "none"; coverage (e.g. 0.9):
        add each image's conformal prediction set, calibrated on held-out labelled images of the run's cache
        (`cache`, or found as open_cache finds it); skip_unreadable: an unreadable image gets a prediction with
        its error instead of stopping."""
        from clipbridge.evaluate.fitting.predict import predict_images

        return predict_images(self, images, topk=topk, seed=seed, pretrained=pretrained, device=device,
                              batch_size=batch_size, calibration=calibration, coverage=coverage,
                              conformal_score=conformal_score, conformal=conformal, cache=cache,
                              skip_unreadable=skip_unreadable)


def fit(cache, method: str = "semobridge", shots: int = 16, seeds: Sequence[int] = (1,), *, recipe: str = DEFAULT_RECIPE,
        protocol: str = "clean", hparams: dict[str, Any] | None = None, view_families: Sequence[str] | None = None,
        prompts: Sequence[str] | None = None, device: str = "auto", dtype: str = "float32",
        precision: str = "auto", calibration: str = "temperature") -> Run:
    """Fit `method` on CoOp's few-shot samples of `cache` for all `seeds` at once, as `recipe` says
    (evaluate/recipes; view_families / prompts choose the uniform recipe's inputs), hparams on top, its
    matrix products at `precision` (auto, fp32, bf16, tf32: bridge.precision; meta["precision"] says which
    ran), the probabilities' `calibration` ("temperature", fitted per seed on the validation queries the
    method's selection used, or "none"; evaluate/fitting/calibrate.py). The test split is not read
    (Run.evaluate does that)."""
    from clipbridge.bridge.precision import resolve_precision
    from clipbridge.bridge.devices import resolve_device
    from clipbridge.evaluate.fitting.plan import plan_fit
    from clipbridge.evaluate.fitting.calibrate import check_calibration
    from clipbridge.evaluate.fitting.tasks import resolve_dtype

    resolve_precision(precision, method, resolve_device(device), resolve_dtype(dtype))   # refused before work
    check_calibration(calibration)
    plan = plan_fit(cache, method, shots, recipe=recipe, families=view_families, prompts=prompts, overrides=hparams)
    task, meta = plan.task(cache, seeds, protocol=protocol, device=str(resolve_device(device)), dtype=dtype)
    meta.update(classnames=list(cache.classnames), weights=_weights(cache))
    state = plan.fit(task, precision, calibration, meta["val_source"])
    meta.update(precision=state.info["precision"])
    return Run(state, meta, dict(plan.overrides))


def load_run(path: str | Path, *, device: str = "cpu") -> Run:
    """A run saved by Run.save or `clipbridge fit` (its tensors on `device`)."""
    from clipbridge.evaluate.fitting.runs import load_run as read

    state, meta, overrides = read(path, device=device)
    return Run(state, meta, overrides, Path(path))


def _weights(cache) -> dict[str, str]:
    """What identifies the cache's weights: the model, the tag or file name and its SHA-256, and the
    --pretrained the extraction was given (a tag, or the file's path then)."""
    return {"model": str(cache.attrs.get("model", "")), "pretrained": str(cache.attrs.get("pretrained", "")),
            "sha256": str(cache.attrs.get("pretrained_sha256", "") or ""),
            "source": _absolute_if_file(str(cache.extract_args.get("pretrained") or cache.attrs.get("pretrained", ""))),
            "precision": str(cache.attrs.get("precision", "") or "fp32")}


def _absolute_if_file(source: str) -> str:
    """A weights file's absolute path (when it is there from this folder), so a run works from any folder;
    a tag unchanged."""
    from clipbridge.cache.weights import is_checkpoint_path

    if source and is_checkpoint_path(source) and Path(source).expanduser().is_file():
        return str(Path(source).expanduser().resolve())
    return source
