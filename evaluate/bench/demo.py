"""`cli.py demo` (`make demo`): the whole pipeline offline, on the embedded default, in one folder.

1. Extract the procedural `shapes` dataset (extract/shapes.py) with the bundled tiny CLIP (the tag `shapes`
   of clipbridge-tiny: extract/weights/clipbridge-tiny-shapes.safetensors),
   into <out>/cache/shapes.h5 (reused when already there).
   The view families are those the paper recipes of the demo's methods use on `shapes` (their default rows:
   the Tip-Adapter/GDA crops, the plain view), the text sets coop and ensemble.
2. Bench zeroshot, tip-adapter, gda, semobridge, semobridge-t and cmm over shots 1, 4, 16 x seeds 1-3 with
   their paper recipes (clean protocol), then print the Markdown table and the plot's path.
3. Measure the modality gap before and after each bridge (evaluate.analysis) at the largest shot count and
   the first seed, the bridges fitted again on the spot, and print its table (outputs in <out>/analysis/).

`quick` is the reduced demo of the end-to-end test: fewer images per class, shots 1 and 16, 2 seeds, and
shorter SeMoBridge-T/CMM training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.bench.grid import BenchOutcome, BenchSpec, run_bench

DEMO_METHODS = ("zeroshot", "tip-adapter", "gda", "semobridge", "semobridge-t", "cmm")
TINY_MODEL = "clipbridge-tiny"
WEIGHTS = Path(__file__).resolve().parents[2] / "extract" / "weights" / f"{TINY_MODEL}-shapes.safetensors"


@dataclass(frozen=True)
class DemoPlan:
    """What one demo runs: the shapes images per class and split, the grid, and per-method overrides."""

    name: str
    sizes: dict[str, int] | None  # None: the full dataset (64/16/64 per class)
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)


FULL = DemoPlan("demo", None, (1, 4, 16), (1, 2, 3))
QUICK = DemoPlan("demo-quick", {"train": 24, "val": 4, "test": 24}, (1, 16), (1, 2),
                 {"semobridge-t": {"steps": 300, "warmup": 30}, "cmm": {"steps": 100}})


def run_demo(out: Path, *, quick: bool = False, device: str = "auto",
             echo: Callable[[str], None] = print) -> BenchOutcome:
    """Extract (or reuse) the shapes cache, bench the demo methods on it and print the table."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    cache_path = extract_shapes(out / "cache" / f"{plan.name}-shapes.h5", plan, device=device, echo=echo)
    spec = BenchSpec(caches=(cache_path,), methods=DEMO_METHODS, shots=plan.shots, seeds=plan.seeds,
                     device=device, hparams=plan.hparams)
    shots, seeds = ",".join(map(str, plan.shots)), ",".join(map(str, plan.seeds))
    echo(f"bench {', '.join(DEMO_METHODS)}: shots {shots} x seeds {seeds}, paper recipes, protocol clean")
    outcome = run_bench(spec, out / "results", plan.name, progress=not quick, echo=echo)
    echo(outcome.markdown.rstrip("\n"))
    echo(f"plot: {outcome.outputs['plot']}")
    echo(f"table: {outcome.outputs['markdown']} and {outcome.outputs['csv']}")
    print_gap_analysis(cache_path, out, plan, device=device, echo=echo)
    echo(f"demo done in {time.perf_counter() - started:.0f} s")
    return outcome


def print_gap_analysis(cache_path: Path, out: Path, plan: DemoPlan, *, device: str,
                       echo: Callable[[str], None]) -> None:
    """`analyze` of the demo's bridges ({max shots}-shot, first seed, the plan's hyper-parameters) on the
    shapes cache: prints the gap table; gap.json/md and the two plots go to <out>/analysis/<plan name>/."""
    from clipbridge.cache.reader import open_cache
    from clipbridge.evaluate.analysis.analyze import DEFAULT_METHODS, AnalysisSpec, run_analysis
    from clipbridge.evaluate.analysis.report import gap_table

    spec = AnalysisSpec(methods=DEFAULT_METHODS, shots=max(plan.shots), seed=plan.seeds[0], device=device,
                        hparams={m: plan.hparams[m] for m in DEFAULT_METHODS if m in plan.hparams})
    echo(f"modality gap: {', '.join(DEFAULT_METHODS)} at {spec.shots} shots, seed {spec.seed}")
    analysis = run_analysis(spec, open_cache(cache_path), out / "analysis", plan.name)
    echo(gap_table(analysis.document["representations"]).rstrip("\n"))
    echo(f"gap analysis: {analysis.outputs['markdown']} (plots: {analysis.outputs['histograms'].name}, "
         f"{analysis.outputs['map'].name})")


def extract_shapes(path: Path, plan: DemoPlan, *, device: str, echo: Callable[[str], None]) -> Path:
    """Extract `shapes` (plan.sizes) with the bundled tiny CLIP into `path`; an existing finished cache is kept."""
    from clipbridge.bridge.recipes import recipe_families
    from clipbridge.extract.models import load_model
    from clipbridge.extract.prompts import build_prompt_sets
    from clipbridge.extract.run import ExtractOptions, run_extraction
    from clipbridge.extract.shapes import shapes_dataset_spec

    if path.is_file():
        echo(f"cache: {path} (already extracted)")
        return path
    if not WEIGHTS.is_file():
        raise ClipBridgeError(f"demo: the bundled checkpoint {WEIGHTS} is missing; reinstall clipbridge")
    spec = shapes_dataset_spec(sizes=plan.sizes)
    prompt_sets = build_prompt_sets(["coop", "ensemble"], spec.name, spec.classnames)
    families = tuple(recipe_families(spec.name, plan.shots, DEMO_METHODS))
    loaded = load_model(TINY_MODEL, "shapes", device=device)          # the bundled weights' tag
    echo(f"cache: extracting shapes with {TINY_MODEL} (shapes: {WEIGHTS.name}) into {path}, view families "
         f"{', '.join(families)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # the full demo's images are `extract --dataset shapes`'s, so hints that extend its cache can name that command
    args = {} if plan.sizes else {"dataset": "shapes", "model": TINY_MODEL, "pretrained": "shapes"}
    summary = run_extraction(spec, loaded, prompt_sets, path,
                             ExtractOptions(families=families, progress=False, extract_args=args))
    echo("\n".join(summary.lines()))
    return path
