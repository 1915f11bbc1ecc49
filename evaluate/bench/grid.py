"""The benchmark grid: datasets × shot counts × methods, all seeds of a cell fitted as one batch.

Records go to <results>/results.jsonl; a record already there is not redone, so an interrupted bench
resumes. Under torchrun the cells are dealt out across ranks (each appends its records under the file
lock) and rank 0 builds <results>/<name>/{table.csv, table.md, accuracy_vs_shots.png, accuracy_vs_time.png,
summary.json} from the records once every rank is done, merged with the grids of other benches of the same
name (evaluate/bench/grid_folder.py: two benches of one --name never drop each other's results). Methods fitted on a source cache can also be scored
on test-only distribution-shift caches (`ood`), restricted to the classes those share with the source. A
method that needs an input a source cache lacks (SeMoBridge without EOS features: a CoCa or HF text tower)
is skipped on that cache with a note in the table and the summary, and every other method runs. A bench can
be one point of a sweep (evaluate/bench/sweep.py): its records then carry `sweep` = {"name", "value"}, part of
their key.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from clipbridge.bridge.devices import resolve_device
from clipbridge.bridge.precision import resolve_precision
from clipbridge.bridge.recipes import DEFAULT_RECIPE
from clipbridge.bridge.registry import get_method, unmet_needs
from clipbridge.bridge.task import EOS, OPTIONAL_INPUTS
from clipbridge.cache.reader import open_cache
from clipbridge.evaluate.bench.distributed import rank_device, world
from clipbridge.evaluate.fitting.plan import FitPlan, plan_fit
from clipbridge.evaluate.fitting.progress import training_progress, wants_bars
from clipbridge.evaluate.fitting.scoring import align_classes, test_records
from clipbridge.evaluate.fitting.tasks import (SplitLoader, cache_identity, check_pairs, check_shots, load_test,
                                               resolve_dtype)
from clipbridge.evaluate.bench.grid_folder import GridFolder, read_grid_folder, write_grid_folder
from clipbridge.evaluate.reporting.files import folder_lock, write_text_atomic
from clipbridge.evaluate.reporting.plots import plot_accuracy_vs_shots, plot_accuracy_vs_time
from clipbridge.evaluate.reporting.reliability import (CALIBRATION_MD, RELIABILITY_PNG, calibration_markdown,
                                                       plot_reliability)
from clipbridge.evaluate.reporting.records import (append_records, latest_by_key, package_version, read_records,
                                                   record_key, results_path)
from clipbridge.evaluate.reporting.tables import build_table, fit_seconds_per_seed, table_summary, to_csv, to_markdown

TABLE_CSV, TABLE_MD, PLOT_PNG, SUMMARY_JSON = "table.csv", "table.md", "accuracy_vs_shots.png", "summary.json"
TIME_PNG = "accuracy_vs_time.png"


@dataclass(frozen=True)
class BenchSpec:
    """What to run. caches / ood are cache file paths. recipe PAPER or UNIFORM (bridge.recipes); view_families and
    prompt_sets choose the uniform recipe's inputs (None: plain / every set of each cache)."""

    caches: tuple[Path, ...]
    methods: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    protocol: str = "clean"
    recipe: str = DEFAULT_RECIPE
    view_families: tuple[str, ...] | None = None
    prompt_sets: tuple[str, ...] | None = None
    device: str = "auto"
    dtype: str = "float32"
    precision: str = "auto"           # matrix products while fitting (bridge.precision)
    ood: tuple[Path, ...] = ()
    model: str | None = None
    pretrained: str | None = None
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)   # per-method overrides of fit
    sweep: dict[str, Any] | None = None   # {"name", "value"} when this bench is one point of a sweep

    def overrides(self, method: str) -> dict[str, Any]:
        """The hyper-parameters this bench passes to `method`'s fit on top of its recipe (recorded as
        `overrides`)."""
        return dict(self.hparams.get(method, {}))


@dataclass
class BenchOutcome:
    """What a bench did; `outputs` is empty on ranks other than 0."""

    fitted_cells: int = 0
    world_size: int = 1
    skipped_cells: int = 0
    records_written: int = 0
    outputs: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""
    val_is_test: list[str] = field(default_factory=list)
    skipped_methods: dict[str, dict[str, str]] = field(default_factory=dict)   # {dataset: {method: reason}}
    keys: set[str] = field(default_factory=set)   # record keys of the whole grid (every rank's cells)


@dataclass
class _Source:
    cache: Any
    loader: SplitLoader
    identity: dict[str, str]


def unrunnable_methods(spec: BenchSpec, sources: list[_Source]) -> dict[tuple[int, str], str]:
    """{(source index, method): why it cannot run there} for methods needing an input the cache lacks."""
    out = {}
    for i, source in enumerate(sources):
        inputs = frozenset({EOS}) if source.cache.has_eos else frozenset()
        for method in spec.methods:
            missing = unmet_needs(get_method(method), inputs)
            if missing:
                out[(i, method)] = (f"needs {'; '.join(OPTIONAL_INPUTS[m] for m in missing)}, which the cache of "
                                    f"{source.identity['dataset']} ({source.identity['model']}) does not hold")
    return out


def plan_grid(spec: BenchSpec, sources: list[_Source],
              unrunnable: dict[tuple[int, str], str]) -> dict[tuple[int, int, str], FitPlan]:
    """Every runnable cell's FitPlan, checked before anything is fitted: shot counts against the class sizes,
    the (shots, seed) pairs and view families the caches hold (only the pairs' validation draws when no
    method of the grid reads a support set: zero-shot alone), text sets, hyper-parameters."""
    plans = {}
    for i, source in enumerate(sources):
        for k in spec.shots:
            check_shots(source.cache, k, source.loader)
            for method in (m for m in spec.methods if (i, m) not in unrunnable):
                plans[(i, k, method)] = plan_fit(source.cache, method, k, recipe=spec.recipe,
                                                 families=spec.view_families, prompts=spec.prompt_sets,
                                                 overrides=spec.overrides(method))
        support = any(plan.reads_support for (j, _, _), plan in plans.items() if j == i)
        check_pairs(source.cache, spec.shots, spec.seeds, spec.protocol, support=support, loader=source.loader)
    return plans


def expected_keys(spec: BenchSpec, sources: list[_Source], targets: list[Any],
                  plans: dict[tuple[int, int, str], FitPlan]) -> dict[tuple, list[str]]:
    """{(source index, shots, method, seed): record keys that seed must have (source test + each OOD)}."""
    keys = {}
    for (i, k, method), plan in plans.items():
        identity = sources[i].identity
        evals = [identity["dataset"]] + [str(t.attrs.get("dataset")) for t in targets]
        for seed in spec.seeds:
            keys[(i, k, method, seed)] = [record_key({
                "dataset": identity["dataset"], "eval_dataset": target, "model": identity["model"],
                "pretrained": identity["pretrained"], "method": method, "shots": k, "seed": seed,
                "recipe": plan.recipe.name, "view_families": list(plan.families),
                "prompt_sets": list(plan.prompt_sets), "protocol": spec.protocol, "overrides": plan.overrides,
                "sweep": spec.sweep})
                for target in evals]
    return keys


def run_bench(spec: BenchSpec, results_dir: str | os.PathLike, name: str, *, progress: bool = True,
              echo: Callable[[str], None] = print, write: bool = True) -> BenchOutcome:
    """Check the whole grid, run its missing cells, then (rank 0, unless `write` is False) write the tables and
    plots."""
    from clipbridge.cache.names import check_name

    check_name(name, "bench name")
    results_file = results_path(results_dir)
    outcome = BenchOutcome()
    device = resolve_device(spec.device)
    for method in spec.methods:                      # a precision the device cannot do: refused before work
        resolve_precision(spec.precision, method, device, resolve_dtype(spec.dtype))
    with world(device) as current:
        device = rank_device(device, current)
        outcome.world_size = current.size
        sources = []
        for path in spec.caches:
            cache = open_cache(path, model=spec.model, pretrained=spec.pretrained)
            sources.append(_Source(cache, SplitLoader(cache), cache_identity(cache)))
        targets = [open_cache(path, model=spec.model, pretrained=spec.pretrained) for path in spec.ood]
        target_loaders = [SplitLoader(t) for t in targets]
        unrunnable = unrunnable_methods(spec, sources)
        for (i, method), reason in unrunnable.items():
            outcome.skipped_methods.setdefault(sources[i].identity["dataset"], {})[method] = reason
            if current.is_main:
                echo(f"note: {method} skipped on {sources[i].identity['dataset']}: {reason}")
        plans = plan_grid(spec, sources, unrunnable)
        class_maps: dict[tuple[int, int], Any] = {}
        keys = expected_keys(spec, sources, targets, plans)
        if write:                                    # tables that cannot merge: refused before any fit
            read_grid_folder(Path(results_dir) / name).merged(
                {key for group in keys.values() for key in group}, _settings(spec), {}, Path(results_dir) / name)
        done = set(latest_by_key(read_records(results_file)))
        cells = [(i, k, m) for i in range(len(sources)) for k in spec.shots for m in spec.methods
                 if (i, m) not in unrunnable]
        mine = current.share(cells)
        pending_of = {cell: tuple(s for s in spec.seeds if not set(keys[(*cell, s)]) <= done) for cell in mine}
        outcome.skipped_cells = sum(1 for cell in mine if not pending_of[cell])
        todo = [cell for cell in mine if pending_of[cell]]       # the bar counts the cells that are fitted
        built: dict[tuple, Any] = {}
        if todo:
            warm_up(device)
        bars = progress and current.is_main
        for i, k, method in tqdm(todo, desc=f"bench rank {current.rank}" if current.size > 1 else "bench",
                                 unit="cell", disable=not wants_bars(bars)):
            pending = pending_of[(i, k, method)]
            source, plan = sources[i], plans[(i, k, method)]
            task_key = (i, k, pending, plan.families, plan.prompt_sets, plan.recipe.validation, plan.reads_support)
            if task_key not in built:
                if any(key[:3] != task_key[:3] for key in built):
                    built.clear()
                built[task_key] = plan.task(source.cache, pending, protocol=spec.protocol, device=str(device),
                                            dtype=spec.dtype, loader=source.loader)
            task, meta = built[task_key]
            meta = {**meta, **plan.meta()}                   # the task may be another method's: its recipe
            with training_progress(f"{method} {k}-shot", bars, position=1, leave=False):
                state = plan.fit(task, spec.precision, val_source=meta["val_source"])
            queries, labels = load_test(source.cache, device=str(device), dtype=spec.dtype, loader=source.loader)
            records = test_records(state, meta, queries, labels, overrides=plan.overrides)
            for j, target in enumerate(targets):
                if (i, j) not in class_maps:
                    class_maps[(i, j)] = align_classes(source.cache, target)
                queries, labels = load_test(target, device=str(device), dtype=spec.dtype,
                                            loader=target_loaders[j])
                records += test_records(state, meta, queries, labels, overrides=plan.overrides,
                                        class_map=class_maps[(i, j)], eval_dataset=str(target.attrs.get("dataset")),
                                        eval_cache_id=str(target.cache_id))
            if spec.sweep is not None:
                records = [{**record, "sweep": spec.sweep} for record in records]
            outcome.records_written += append_records(results_file, records)
            outcome.fitted_cells += 1
        current.barrier()
        outcome.keys = wanted = {key for group in keys.values() for key in group}
        if current.is_main and write:
            write_merged_outputs(Path(results_dir) / name, results_file, spec, sources, outcome, echo)
        current.barrier()
    return outcome


def warm_up(device: Any) -> None:
    """torch's one-time set-up, done untimed before the first fit, so that a cell's fit_seconds (the
    accuracy-versus-time plot) time its fit alone: the first optimiser a process builds imports torch._dynamo
    (7.5 s on this project's busy 2-core machine), which the first trained cell would otherwise carry."""
    import torch

    weight = torch.zeros(4, device=device, requires_grad=True)
    optimiser = torch.optim.AdamW([weight], lr=1e-3)
    (weight @ weight).backward()
    optimiser.step()


def _settings(spec: BenchSpec) -> dict[str, str]:
    return {"recipe": spec.recipe, "protocol": spec.protocol}


def _lists(spec: BenchSpec, sources: list[_Source], outcome: BenchOutcome) -> dict[str, Any]:
    """The grid's lists as summary.json states them (merged across the benches of one folder)."""
    return {"datasets": [s.identity["dataset"] for s in sources], "caches": [s.identity for s in sources],
            "ood": [str(p) for p in spec.ood], "methods": list(spec.methods), "shots": list(spec.shots),
            "seeds": list(spec.seeds),
            "hparams": {method: spec.overrides(method) for method in spec.methods if spec.overrides(method)},
            "models": sorted({f"{s.identity['model']}/{s.identity['pretrained']}" for s in sources}),
            "skipped_methods": outcome.skipped_methods}


def write_merged_outputs(folder: Path, results_file: Path, spec: BenchSpec, sources: list[_Source],
                         outcome: BenchOutcome, echo: Callable[[str], None]) -> None:
    """Under the folder's lock: this grid merged with the folder's (grid_folder.GridFolder), its latest records,
    then every output of the merged grid."""
    with folder_lock(folder):
        grid = read_grid_folder(folder).merged(outcome.keys, _settings(spec), _lists(spec, sources, outcome), folder)
        records = [r for key, r in latest_by_key(read_records(results_file)).items() if key in grid.keys]
        missing = len(grid.keys) - len(records)
        if missing:
            echo(f"warning: {missing} of {len(grid.keys)} results of the grid are missing from {results_file}")
        write_outputs(folder, records, spec, grid, outcome)
        write_grid_folder(folder, grid)


def write_outputs(folder: Path, records: list[dict[str, Any]], spec: BenchSpec, grid: GridFolder,
                  outcome: BenchOutcome) -> None:
    """table.csv, table.md, accuracy_vs_shots.png, accuracy_vs_time.png, reliability.png and calibration.md
    (evaluate.reporting.reliability) and summary.json of the grid's records."""
    table = build_table(records)
    skipped = grid.lists.get("skipped_methods", {})
    folder.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, skipped)
    write_text_atomic(folder / TABLE_CSV, to_csv(table))
    write_text_atomic(folder / TABLE_MD, markdown)
    plot = plot_accuracy_vs_shots(table, folder / PLOT_PNG)
    seconds_per_seed = fit_seconds_per_seed(records)
    time_plot = plot_accuracy_vs_time(table, seconds_per_seed, folder / TIME_PNG)
    reliability = plot_reliability(records, folder / RELIABILITY_PNG)
    calibration = calibration_markdown(records)
    if calibration:
        write_text_atomic(folder / CALIBRATION_MD, calibration)
    fit_seconds: dict[str, list[float]] = {}
    for record in records:
        if record["dataset"] == record.get("eval_dataset", record["dataset"]):
            fit_seconds.setdefault(record["method"], []).append(float(record.get("fit_seconds", 0.0)))
    summary = {
        **grid.lists, "protocol": spec.protocol, "recipe": spec.recipe,
        "records": len(records), "val_is_test": table.val_is_test, "table": table_summary(table),
        "mean_fit_seconds": {m: sum(v) / len(v) for m, v in sorted(fit_seconds.items())},
        "fit_seconds_per_seed": {f"{m}/{k}": s for (m, k), s in seconds_per_seed.items()},
        "package_version": package_version(),
    }
    write_text_atomic(folder / SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    outcome.outputs = {"csv": folder / TABLE_CSV, "markdown": folder / TABLE_MD, "plot": plot,
                       "time plot": time_plot, "summary": folder / SUMMARY_JSON,
                       **({"reliability diagram": reliability} if reliability else {}),
                       **({"calibration table": folder / CALIBRATION_MD} if calibration else {})}
    outcome.markdown = markdown
    outcome.val_is_test = table.val_is_test
