"""The Python API: fit a method on a cache, score it, save it, and classify new images with it.

    import clipbridge as cb

    cache = cb.open_cache("cache/ViT-B-16--openai/dtd.h5")
    run = cb.fit(cache, method="semobridge-t", shots=16, seeds=[1, 2, 3])      # the paper recipe, protocol clean
    records = run.evaluate()                    # test accuracy per seed (the test split is read only here)
    run.save("runs")                            # runs/dtd/semobridge-t/shots16-seeds1-3-<id>/
    predictions = run.predict(["photo.jpg"], topk=5)      # encoded with the run's model and weights
    run = cb.load_run("runs/dtd/semobridge-t/shots16-seeds1-3-<id>")

The command line (`clipbridge fit`, `evaluate`, `predict`) is a thin layer over these calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from clipbridge.cache.errors import ClipBridgeError


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
        `path`, looked for where it was, beside the run and under `cache_root` (evaluate.cache_search)."""
        from clipbridge.cache.reader import open_cache

        if path is None:
            from clipbridge.evaluate.cache_search import find_run_cache

            return find_run_cache(self.meta["cache"], self.meta["cache_id"], self.path,
                                  cache_root)
        cache = open_cache(path)
        if str(cache.cache_id) != self.meta["cache_id"]:
            raise ClipBridgeError(f"cache {cache.path} (id {cache.cache_id}) is not the cache this run was fitted on "
                                  f"(id {self.meta['cache_id']}, {self.meta['cache']})")
        return cache

    def evaluate(self, cache=None, *, device: str = "auto") -> list[dict[str, Any]]:
        """Score every seed on the cache's test split: one result record per seed (evaluate/records.py)."""
        from clipbridge.evaluate.scoring import score_queries, seed_records
        from clipbridge.evaluate.tasks import load_test, resolve_device

        cache = cache if cache is not None else self.open_cache()
        target = str(resolve_device(device))
        queries, labels = load_test(cache, device=target, dtype=self.meta["dtype"])
        state = _state_on(self.state, target)
        return seed_records(state, {**self.meta, "device": target}, score_queries(state, queries, labels),
                            overrides=self.overrides)

    def save(self, root: str | Path = "runs") -> Path:
        """Write the run under root/<dataset>/<method>/ (atomically); returns and remembers its folder."""
        from clipbridge.evaluate.runs import save_run

        self.path = save_run(root, self.state, self.meta, self.overrides)
        return self.path

    def predict(self, images: Sequence[str | Path] | str | Path, *, topk: int = 5, seed: int | None = None,
                pretrained: str | None = None, device: str = "auto", batch_size: int = 64) -> list:
        """Classify image files (a folder is read recursively) with the run's model and weights; top-k classes
        and probabilities per image (evaluate/predict.py). seed: which seed's fit (default the first);
        pretrained: the weights file, when it is no longer where the cache was extracted from."""
        from clipbridge.evaluate.predict import predict_images

        return predict_images(self, images, topk=topk, seed=seed, pretrained=pretrained, device=device,
                              batch_size=batch_size)


def fit(cache, method: str = "semobridge", shots: int = 16, seeds: Sequence[int] = (1,), *, recipe: str = "paper",
        protocol: str = "clean", hparams: dict[str, Any] | None = None, view_families: Sequence[str] | None = None,
        prompts: Sequence[str] | None = None, device: str = "auto", dtype: str = "float32") -> Run:
    """Fit `method` on CoOp's few-shot samples of `cache` for all `seeds` at once, as `recipe` says
    (evaluate/recipes; view_families / prompts choose the uniform recipe's inputs), hparams on top. The test
    split is not read (Run.evaluate does that)."""
    from clipbridge.evaluate.plan import plan_fit
    from clipbridge.evaluate.scoring import fit_method
    from clipbridge.evaluate.tasks import build_fit_task, resolve_device

    plan = plan_fit(cache, method, shots, recipe=recipe, families=view_families, prompts=prompts, overrides=hparams)
    task, meta = build_fit_task(cache, shots=shots, seeds=seeds, families=plan.families,
                                prompt_sets=plan.prompt_sets, protocol=protocol, device=str(resolve_device(device)),
                                dtype=dtype)
    meta.update(plan.meta())
    meta.update(classnames=list(cache.classnames), weights=_weights(cache))
    return Run(fit_method(method, task, plan.hparams), meta, dict(plan.overrides))


def load_run(path: str | Path, *, device: str = "cpu") -> Run:
    """A run saved by Run.save or `clipbridge fit` (its tensors on `device`)."""
    from clipbridge.evaluate.runs import load_run as read

    state, meta, overrides = read(path, device=device)
    return Run(state, meta, overrides, Path(path))


def _weights(cache) -> dict[str, str]:
    """What identifies the cache's weights: the model, the tag or file name and its SHA-256, and the
    --pretrained the extraction was given (a tag, or the file's path then)."""
    return {"model": str(cache.attrs.get("model", "")), "pretrained": str(cache.attrs.get("pretrained", "")),
            "sha256": str(cache.attrs.get("pretrained_sha256", "") or ""),
            "source": _absolute_if_file(str(cache.extract_args.get("pretrained") or cache.attrs.get("pretrained", ""))),
            "precision": str(cache.attrs.get("precision", "") or "fp32")}


def _state_on(state, device: str):
    """The state with its tensors on `device` (a copy when they are elsewhere)."""
    from clipbridge.bridge.registry import FittedState

    if all(str(t.device) == device or (device == "cpu" and t.device.type == "cpu") for t in state.tensors.values()):
        return state
    return FittedState(state.method, {k: t.to(device) for k, t in state.tensors.items()}, state.hparams, state.info)


def _absolute_if_file(source: str) -> str:
    """A weights file's absolute path (when it is there from this folder), so a run works from any folder;
    a tag unchanged."""
    from clipbridge.cache.weights import is_checkpoint_path

    if source and is_checkpoint_path(source) and Path(source).expanduser().is_file():
        return str(Path(source).expanduser().resolve())
    return source
