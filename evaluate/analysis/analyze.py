"""What `analyze` does: bridges from saved runs or fitted on the spot, their representations of the test
images and of the few-shot support, every metric, gap.json, gap.md, cosine_hist.png and embedding_map.png.

The bridges are fitted (or were, for saved runs) on one CoOp few-shot draw (shots, seed) exactly as `fit`
does; the test split is read only after fitting. The analysed images are the test split's (all of them, or a
seeded uniform sample of `max_images`), the gallery is the plain view of each support image of that seed,
and the same images, pairs and gallery serve every representation.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from clipbridge.bridge.recipes import PAPER, order_methods
from clipbridge.bridge.registry import FittedState
from clipbridge.bridge.text import class_text
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.analysis import DEFAULT_MAX_IMAGES, DEFAULT_MAX_PAIRS, DEFAULT_METHODS
from clipbridge.evaluate.analysis.measure import Measurement, measure
from clipbridge.evaluate.analysis.metrics import sample_pairs
from clipbridge.evaluate.analysis.plots import cosine_hist_figure, embedding_map_figure
from clipbridge.evaluate.analysis.report import DEFINITIONS, gap_markdown
from clipbridge.evaluate.analysis.representations import IMAGE_MAPS, Representation, image_map, representations
from clipbridge.evaluate.reporting.files import write_text_atomic
from clipbridge.evaluate.reporting.plots import save_figure
from clipbridge.evaluate.reporting.records import package_version
from clipbridge.evaluate.fitting.runs import load_run, save_run
from clipbridge.evaluate.fitting.scoring import score_queries
from clipbridge.bridge.devices import resolve_device
from clipbridge.evaluate.fitting.tasks import SplitLoader, build_fit_task, load_test

GAP_JSON, GAP_MD, HIST_PNG, MAP_PNG = "gap.json", "gap.md", "cosine_hist.png", "embedding_map.png"
FIGURE_DPI = 90   # four panels a row: 1,500 px wide


@dataclass(frozen=True)
class AnalysisSpec:
    """What to analyse. `methods` are fitted on the spot (with `hparams[method]`); `runs` are saved runs
    (their shots, view families, prompt sets, protocol and dtype then apply; given values must agree). Bridges
    fitted on the spot follow `recipe` (evaluate/recipes), view_families / prompt_sets replacing its inputs."""

    methods: tuple[str, ...] = ()
    runs: tuple[Path, ...] = ()
    shots: int | None = None
    seed: int = 1
    recipe: str = PAPER
    view_families: tuple[str, ...] | None = None
    prompt_sets: tuple[str, ...] | None = None
    protocol: str | None = None
    device: str = "auto"
    dtype: str | None = None
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_images: int = DEFAULT_MAX_IMAGES
    max_pairs: int = DEFAULT_MAX_PAIRS
    save_runs: Path | None = None      # save the bridges fitted on the spot as runs under this folder


@dataclass
class Analysis:
    """gap.json's document and gap.md's text; the representations (raw first) and their measurements;
    labels [N] of the analysed test images, gallery_labels [M] of the support gallery, the class texts
    T̄ [C, D] and the class names."""

    document: dict[str, Any]
    markdown: str
    representations: list[Representation]
    measurements: list[Measurement]
    labels: Tensor
    gallery_labels: Tensor
    text: Tensor
    classnames: list[str]
    seconds: dict[str, float] = field(default_factory=dict)   # load, fit, measure, plots, write
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class _Bridge:
    state: FittedState
    seed_index: int
    source: dict[str, Any]


def analysis_task(cache, *, shots: int, seed: int, view_families: Sequence[str], prompt_sets: Sequence[str] | None,
                  protocol: str, device: str, dtype: str, loader: SplitLoader):
    """The FewShotTask (one seed) the bridges are, or were, fitted on, and its meta: the only call of
    evaluate.fitting.tasks.build_fit_task here."""
    return build_fit_task(cache, shots=shots, seeds=[seed], families=view_families, prompt_sets=prompt_sets,
                          protocol=protocol, device=device, dtype=dtype, loader=loader)


def fit_plans(spec: AnalysisSpec, cache, shots: int) -> dict:
    """{method: evaluate.fitting.plan.FitPlan} of the bridges fitted on the spot; they must share view families and
    prompt sets (the analysis measures them on one task), as the paper recipes of the three bridges do."""
    from clipbridge.evaluate.fitting.plan import plan_fit

    plans = {m: plan_fit(cache, m, shots, recipe=spec.recipe, families=spec.view_families, prompts=spec.prompt_sets,
                         overrides=spec.hparams.get(m, {})) for m in spec.methods}
    inputs = {(p.families, p.prompt_sets) for p in plans.values()}
    if len(inputs) > 1:
        listed = "; ".join(f"{m}: views {'+'.join(p.families)}, text {'+'.join(p.prompt_sets)}"
                           for m, p in plans.items())
        raise ClipBridgeError(f"the bridges' recipes use different inputs ({listed}); analyze measures them on one "
                              "task: give --view-family and --prompts, or --recipe uniform")
    return plans


def load_runs(runs: Sequence[Path], cache, seed: int, device: torch.device) -> tuple[list[_Bridge], dict[str, Any]]:
    """The saved runs' bridges (seed `seed` of each) and the setting they share (shots, view_families,
    prompt_sets, protocol, dtype); a ClipBridgeError when a run is of another cache, lacks the seed, maps no images,
    or disagrees with the others."""
    bridges, setting, methods = [], None, set()
    for path in runs:
        state, meta, overrides = load_run(path, device=device)
        if state.method not in IMAGE_MAPS:
            raise ClipBridgeError(f"run {path} is of method {state.method!r}, which does not map images; analyze "
                                  f"takes {', '.join(IMAGE_MAPS)}")
        if state.method in methods:
            raise ClipBridgeError(f"two runs of {state.method} given (run {path}); give one per method")
        methods.add(state.method)
        if str(cache.cache_id) != meta["cache_id"]:
            raise ClipBridgeError(f"run {path} was fitted on cache {meta['cache']} (id {meta['cache_id']}), not on "
                                  f"{cache.path} (id {cache.cache_id})")
        if seed not in meta["seeds"]:
            raise ClipBridgeError(f"run {path} has seeds {meta['seeds']}, not seed {seed} (choose one with --seed)")
        mine = {key: meta.get(key) for key in ("shots", "view_families", "prompt_sets", "protocol", "dtype")}
        if setting is not None and mine != setting:
            raise ClipBridgeError(f"run {path} was fitted with {mine}, another run with {setting}; analyze "
                                  "compares bridges of one few-shot setting")
        setting = mine
        source = {"run": str(path), "overrides": overrides, "fit_seconds": state.info.get("fit_seconds")}
        bridges.append(_Bridge(state, meta["seeds"].index(seed), source))
    return bridges, setting or {}


def _resolve_setting(spec: AnalysisSpec, from_runs: dict[str, Any], plans: dict) -> dict[str, Any]:
    """shots, view_families, prompt_sets, protocol, dtype: the runs' (given options must agree) or the
    options' and the fitted bridges' recipes'."""
    given = {"shots": spec.shots, "protocol": spec.protocol, "dtype": spec.dtype,
             "view_families": list(spec.view_families) if spec.view_families else None,
             "prompt_sets": list(spec.prompt_sets) if spec.prompt_sets else None}
    if not from_runs:
        plan = next(iter(plans.values()))
        return {"shots": spec.shots or 16, "protocol": spec.protocol or "clean", "dtype": spec.dtype or "float32",
                "view_families": list(plan.families), "prompt_sets": list(plan.prompt_sets)}
    for key, value in given.items():
        if value is not None and value != from_runs[key]:
            raise ClipBridgeError(f"--{key.replace('_sets', 's')} {value} disagrees with the runs' {key} "
                                  f"{from_runs[key]}")
    return dict(from_runs)


def _support_gallery(task) -> tuple[Tensor, Tensor]:
    """The plain view (view 0) of each real support image of the task's one seed: [M, D] raw, labels [M]."""
    c, kv = task.support_mask.shape
    v = task.views
    plain = task.support[0].reshape(c, kv // v, v, -1)[:, :, 0]                      # [C, K, D]
    mask = task.support_mask.reshape(c, kv // v, v)[:, :, 0]                         # [C, K]
    labels = torch.arange(c, device=mask.device)[:, None].expand_as(mask)
    return plain[mask], labels[mask]


def check_spec(spec: AnalysisSpec) -> None:
    """Refuse bad options before any work."""
    unknown = [m for m in spec.methods if m not in IMAGE_MAPS]
    if unknown:
        raise ClipBridgeError(f"method(s) {unknown} do not map images; analyze takes {', '.join(IMAGE_MAPS)}")
    if spec.max_images < 2:
        raise ClipBridgeError(f"--max-images must be at least 2, got {spec.max_images}")
    if spec.max_pairs < 1:
        raise ClipBridgeError(f"--max-pairs must be at least 1, got {spec.max_pairs}")
    if not spec.methods and not spec.runs:
        raise ClipBridgeError("nothing to analyse: give --methods or --run")


def run_analysis(spec: AnalysisSpec, cache, out: Path | None = None, name: str | None = None,
                 echo: Callable[[str], None] = lambda text: None) -> Analysis:
    """Fit (or load) the bridges, measure every representation and, when `out` is given, write gap.json,
    gap.md, cosine_hist.png and embedding_map.png in <out>/<name>/ (default name <dataset>-<K>shot-seed<S>),
    each file atomically."""
    check_spec(spec)
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    device = resolve_device(spec.device)
    bridges, from_runs = load_runs(spec.runs, cache, spec.seed, device)
    fitted = [m for m in spec.methods if m not in {b.state.method for b in bridges}]
    plans = fit_plans(replace(spec, methods=tuple(fitted)), cache, from_runs.get("shots") or spec.shots or 16)
    setting = _resolve_setting(spec, from_runs, plans)
    loader = SplitLoader(cache)
    task, meta = analysis_task(cache, shots=setting["shots"], seed=spec.seed, view_families=setting["view_families"],
                               prompt_sets=setting["prompt_sets"], protocol=setting["protocol"], device=str(device),
                               dtype=setting["dtype"], loader=loader)
    seconds["load"] = time.perf_counter() - clock
    clock = time.perf_counter()
    for method in fitted:
        echo(f"fit {method} on {meta['dataset']}: {meta['shots']} shots, seed {spec.seed}, {spec.recipe} recipe")
        overrides = spec.hparams.get(method, {})
        state = plans[method].fit(task)
        source = {"fitted": True, "overrides": overrides, "fit_seconds": state.info["fit_seconds"]}
        if spec.save_runs is not None:
            source["run"] = str(save_run(spec.save_runs, state, {**meta, **plans[method].meta()}, overrides))
            echo(f"run saved: {source['run']}")
        bridges.append(_Bridge(state, 0, source))
    seconds["fit"] = time.perf_counter() - clock
    order = order_methods(b.state.method for b in bridges)
    bridges.sort(key=lambda b: order.index(b.state.method))

    clock = time.perf_counter()
    queries, labels = load_test(cache, device=str(device), dtype=setting["dtype"], loader=loader)
    total = queries.shape[0]
    if total < 2:
        raise ClipBridgeError(f"cache {cache.path}: the test split has {total} image(s); the analysis needs 2")
    generator = torch.Generator().manual_seed(spec.seed)
    if total > spec.max_images:
        keep = torch.randperm(total, generator=generator)[:spec.max_images].sort().values.to(queries.device)
        queries, labels = queries[keep], labels[keep]
    text = class_text(task)
    gallery, gallery_labels = _support_gallery(task)
    maps = [image_map(b.state, b.seed_index, text.eos_length) for b in bridges]
    reps = representations(queries, gallery, maps)
    pairs = sample_pairs(labels, spec.max_pairs, spec.seed)
    measurements = [measure(rep, labels, gallery_labels, text.projected, pairs) for rep in reps]
    accuracy = [score_queries(b.state, queries, labels)[b.seed_index] for b in bridges]
    seconds["measure"] = time.perf_counter() - clock

    document = _document(meta, spec, setting, total, queries.shape[0], gallery.shape[0], pairs, reps, measurements,
                         bridges, accuracy)
    analysis = Analysis(document, gap_markdown(document), reps, measurements, labels, gallery_labels,
                        text.projected, list(cache.classnames), seconds)
    if out is not None:
        write_outputs(analysis, out / (name or f"{meta['dataset']}-{meta['shots']}shot-seed{spec.seed}"))
    return analysis


def _document(meta, spec, setting, total, analysed, gallery, pairs, reps, measurements, bridges, accuracy):
    """gap.json's content (see report.DEFINITIONS for the metrics)."""
    rows = []
    for rep, m in zip(reps, measurements):
        row = {"name": rep.name, "formula": rep.formula, "metrics": m.row, "method_top1": None,
               "source": None, "source_text": "the cache's image embeddings"}
        for bridge, acc in zip(bridges, accuracy):
            if bridge.state.method == rep.name:
                row["method_top1"], row["source"] = acc, bridge.source
                extra = f" with {bridge.source['overrides']}" if bridge.source["overrides"] else ""
                where = "fitted on the spot" if bridge.source.get("fitted") else f"run {bridge.source['run']}"
                row["source_text"] = f"{where}{extra}"
        rows.append(row)
    sampled = analysed < total
    return {
        "dataset": meta["dataset"], "model": meta["model"], "pretrained": meta["pretrained"], "cache": meta["cache"],
        "cache_id": meta["cache_id"], "shots": meta["shots"], "seed": spec.seed, "view_families": meta["view_families"],
        "prompt_sets": meta["prompt_sets"], "protocol": meta["protocol"], "val_is_test": meta["val_is_test"],
        "dtype": setting["dtype"],
        "images": {"split": "test", "analysed": analysed, "total": total,
                   "sampling": f"uniform without replacement, seed {spec.seed}" if sampled else "all of them",
                   "max_images": spec.max_images},
        "gallery": {"images": gallery, "what": f"view 0 of every support image of seed {spec.seed}, "
                                               f"{meta['shots']} per class"},
        "pairs": {"max_per_class": spec.max_pairs, "intra": {"used": int(pairs.intra_i.numel()),
                                                             "total": pairs.intra_total},
                  "inter": {"used": int(pairs.inter_i.numel()), "total": pairs.inter_total},
                  "sampling": f"per class all pairs, or {spec.max_pairs:,} drawn uniformly without replacement "
                              f"when it has more (seed {spec.seed}); different-class pairs are (image of the "
                              "class, image of another class)"},
        "text": "T̄_c = n(mean_p n(e_p Wt)) over the prompts of the sets " + ", ".join(meta["prompt_sets"]),
        "definitions": DEFINITIONS, "representations": rows, "package_version": package_version(),
    }


def write_outputs(analysis: Analysis, out: Path) -> None:
    """gap.json, gap.md, cosine_hist.png, embedding_map.png in `out` (created), each written atomically."""
    clock = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    hist = save_figure(cosine_hist_figure(analysis.measurements), out / HIST_PNG, dpi=FIGURE_DPI)
    projection = save_figure(embedding_map_figure(analysis.representations, analysis.text, analysis.labels,
                                                  analysis.classnames), out / MAP_PNG, dpi=FIGURE_DPI)
    analysis.seconds["plots"] = time.perf_counter() - clock
    clock = time.perf_counter()
    write_text_atomic(out / GAP_JSON, json.dumps(_finite(analysis.document), indent=2, sort_keys=True) + "\n")
    write_text_atomic(out / GAP_MD, analysis.markdown)
    analysis.seconds["write"] = time.perf_counter() - clock
    analysis.outputs = {"json": out / GAP_JSON, "markdown": out / GAP_MD, "histograms": hist, "map": projection}


def _finite(value: Any) -> Any:
    """The document with NaN (a metric without pairs) as null, so gap.json is strict JSON."""
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and value != value else value
