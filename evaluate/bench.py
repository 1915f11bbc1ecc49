"""The benchmark grid: datasets × shot counts × methods, all seeds of a cell fitted as one batch.

Records go to <results>/results.jsonl; a record already there is not redone, so an interrupted bench
resumes. Under torchrun the cells are dealt out across ranks (each appends its records under the file
lock) and rank 0 builds <results>/<name>/{table.csv, table.md, accuracy_vs_shots.png, accuracy_vs_time.png,
summary.json} from the records once every rank is done. Methods fitted on a source cache can also be scored
on test-only distribution-shift caches (`ood`), restricted to the classes those share with the source. A
bench can be one point of a sweep (evaluate/sweep.py): its records then carry `sweep` = {"name", "value"},
part of their key.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from clipbridge.cache.reader import open_cache
from clipbridge.evaluate.distributed import rank_device, world
from clipbridge.evaluate.plots import plot_accuracy_vs_shots, plot_accuracy_vs_time
from clipbridge.evaluate.records import (append_records, latest_by_key, package_version, read_records, record_key,
                              results_path)
from clipbridge.evaluate.scoring import align_classes, fit_method, score_queries, seed_records
from clipbridge.evaluate.tables import build_table, fit_seconds_per_seed, table_summary, to_csv, to_markdown
from clipbridge.evaluate.tasks import SplitLoader, build_fit_task, cache_identity, load_test, resolve_device

TABLE_CSV, TABLE_MD, PLOT_PNG, SUMMARY_JSON = "table.csv", "table.md", "accuracy_vs_shots.png", "summary.json"
TIME_PNG = "accuracy_vs_time.png"


@dataclass(frozen=True)
class BenchSpec:
    """What to run. caches / ood are cache file paths; prompt_sets None = every set of each cache."""

    caches: tuple[Path, ...]
    methods: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    protocol: str = "clean"
    views: int = 1
    prompt_sets: tuple[str, ...] | None = None
    device: str = "auto"
    dtype: str = "float32"
    ood: tuple[Path, ...] = ()
    model: str | None = None
    pretrained: str | None = None
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)   # per-method overrides of fit
    sweep: dict[str, Any] | None = None   # {"name", "value"} when this bench is one point of a sweep

    def overrides(self, method: str) -> dict[str, Any]:
        """The hyper-parameters this bench passes to `method`'s fit (recorded as `overrides`)."""
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
    keys: set[str] = field(default_factory=set)   # record keys of the whole grid (every rank's cells)


@dataclass
class _Source:
    cache: Any
    loader: SplitLoader
    identity: dict[str, str]
    prompt_sets: list[str]


def expected_keys(spec: BenchSpec, sources: list[_Source], targets: list[Any]) -> dict[tuple, list[str]]:
    """{(source index, shots, method, seed): record keys that seed must have (source test + each OOD)}."""
    keys = {}
    for i, source in enumerate(sources):
        evals = [source.identity["dataset"]] + [str(t.attrs.get("dataset")) for t in targets]
        for k in spec.shots:
            for method in spec.methods:
                for seed in spec.seeds:
                    keys[(i, k, method, seed)] = [record_key({
                        "dataset": source.identity["dataset"], "eval_dataset": target, "model":
                        source.identity["model"], "pretrained": source.identity["pretrained"], "method": method,
                        "shots": k, "seed": seed, "views": spec.views, "prompt_sets": source.prompt_sets,
                        "protocol": spec.protocol, "overrides": spec.overrides(method), "sweep": spec.sweep})
                        for target in evals]
    return keys


def run_bench(spec: BenchSpec, results_dir: str | os.PathLike, name: str, *, progress: bool = True,
              echo: Callable[[str], None] = print, write: bool = True) -> BenchOutcome:
    """Run the missing cells of the grid, then (rank 0, unless `write` is False) write the tables and plots."""
    results_file = results_path(results_dir)
    outcome = BenchOutcome()
    device = resolve_device(spec.device)
    with world(device) as current:
        device = rank_device(device, current)
        outcome.world_size = current.size
        sources = []
        for path in spec.caches:
            cache = open_cache(path, model=spec.model, pretrained=spec.pretrained)
            sets = list(spec.prompt_sets) if spec.prompt_sets else list(cache.text_sets)
            sources.append(_Source(cache, SplitLoader(cache), cache_identity(cache), sets))
        targets = [open_cache(path, model=spec.model, pretrained=spec.pretrained) for path in spec.ood]
        target_loaders = [SplitLoader(t) for t in targets]
        class_maps: dict[tuple[int, int], Any] = {}
        keys = expected_keys(spec, sources, targets)
        done = set(latest_by_key(read_records(results_file)))
        cells = [(i, k, m) for i in range(len(sources)) for k in spec.shots for m in spec.methods]
        mine = current.share(cells)
        built: dict[tuple, Any] = {}
        for i, k, method in tqdm(mine, desc=f"bench rank {current.rank}" if current.size > 1 else "bench",
                                 unit="cell", disable=not (progress and current.is_main)):
            pending = tuple(s for s in spec.seeds if not set(keys[(i, k, method, s)]) <= done)
            if not pending:
                outcome.skipped_cells += 1
                continue
            source = sources[i]
            if (i, k, pending) not in built:
                built.clear()
                built[(i, k, pending)] = build_fit_task(
                    source.cache, shots=k, seeds=pending, views=spec.views, prompt_sets=source.prompt_sets,
                    protocol=spec.protocol, device=str(device), dtype=spec.dtype, loader=source.loader)
            task, meta = built[(i, k, pending)]
            overrides = spec.overrides(method)
            state = fit_method(method, task, overrides)
            queries, labels = load_test(source.cache, device=str(device), dtype=spec.dtype, loader=source.loader)
            records = seed_records(state, meta, score_queries(state, queries, labels), overrides=overrides)
            for j, target in enumerate(targets):
                if (i, j) not in class_maps:
                    class_maps[(i, j)] = align_classes(source.cache, target)
                queries, labels = load_test(target, device=str(device), dtype=spec.dtype,
                                            loader=target_loaders[j])
                accuracy = score_queries(state, queries, labels, class_maps[(i, j)])
                records += seed_records(state, meta, accuracy, overrides=overrides,
                                        eval_dataset=str(target.attrs.get("dataset")),
                                        eval_cache_id=str(target.cache_id))
            if spec.sweep is not None:
                records = [{**record, "sweep": spec.sweep} for record in records]
            outcome.records_written += append_records(results_file, records)
            outcome.fitted_cells += 1
        current.barrier()
        outcome.keys = wanted = {key for group in keys.values() for key in group}
        if current.is_main and write:
            records = [r for key, r in latest_by_key(read_records(results_file)).items() if key in wanted]
            missing = len(wanted) - len(records)
            if missing:
                echo(f"warning: {missing} of {len(wanted)} results of the grid are missing from {results_file}")
            write_outputs(Path(results_dir) / name, records, spec, sources, outcome)
        current.barrier()
    return outcome


def write_outputs(folder: Path, records: list[dict[str, Any]], spec: BenchSpec, sources: list[_Source],
                  outcome: BenchOutcome) -> None:
    """table.csv, table.md, accuracy_vs_shots.png, accuracy_vs_time.png and summary.json of the grid's records."""
    table = build_table(records)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table)
    _write_atomic(folder / TABLE_CSV, to_csv(table))
    _write_atomic(folder / TABLE_MD, markdown)
    plot = plot_accuracy_vs_shots(table, folder / PLOT_PNG)
    seconds_per_seed = fit_seconds_per_seed(records)
    time_plot = plot_accuracy_vs_time(table, seconds_per_seed, folder / TIME_PNG)
    fit_seconds: dict[str, list[float]] = {}
    for record in records:
        if record["dataset"] == record.get("eval_dataset", record["dataset"]):
            fit_seconds.setdefault(record["method"], []).append(float(record.get("fit_seconds", 0.0)))
    summary = {
        "datasets": [s.identity["dataset"] for s in sources], "caches": [s.identity for s in sources],
        "ood": [str(p) for p in spec.ood], "methods": list(spec.methods), "shots": list(spec.shots),
        "seeds": list(spec.seeds), "protocol": spec.protocol, "views": spec.views,
        "hparams": {method: spec.overrides(method) for method in spec.methods if spec.overrides(method)},
        "records": len(records), "val_is_test": table.val_is_test, "table": table_summary(table),
        "mean_fit_seconds": {m: sum(v) / len(v) for m, v in sorted(fit_seconds.items())},
        "fit_seconds_per_seed": {f"{m}/{k}": s for (m, k), s in seconds_per_seed.items()},
        "package_version": package_version(),
    }
    _write_atomic(folder / SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    outcome.outputs = {"csv": folder / TABLE_CSV, "markdown": folder / TABLE_MD, "plot": plot,
                       "time plot": time_plot, "summary": folder / SUMMARY_JSON}
    outcome.markdown = markdown
    outcome.val_is_test = table.val_is_test


def _write_atomic(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
