"""What `fit` and `evaluate` do: fit all seeds batched, score on test last, save the run, append records.

The order is the protocol's guarantee: the task is built and the method fitted before the test split is
read (except `paper` on a cache without val, where val is the test split and the output says so).
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from clipbridge.cache.errors import ClipBridgeError
from clipbridge.evaluate.plan import FitPlan
from clipbridge.evaluate.records import append_records, results_path
from clipbridge.evaluate.runs import load_run, save_run
from clipbridge.evaluate.tables import build_table, to_markdown
from clipbridge.evaluate.scoring import fit_method, score_queries, seed_records
from clipbridge.evaluate.tasks import SplitLoader, build_fit_task, load_test, resolve_device

Echo = Callable[[str], None]


def fit_and_report(cache, *, plan: FitPlan, shots: int, seeds: Sequence[int], protocol: str = "clean",
                   device: str = "auto", dtype: str = "float32", runs_root: str = "runs",
                   results_dir: str = "results", echo: Echo = print,
                   note: Callable[[dict], None] = lambda meta: None) -> tuple[Path, list[dict[str, Any]]]:
    """Fit as `plan` says, score, print a per-seed report, save the run and append the records;
    (run dir, records)."""
    overrides = dict(plan.overrides)
    loader = SplitLoader(cache)
    task, meta = build_fit_task(cache, shots=shots, seeds=seeds, families=plan.families,
                                prompt_sets=plan.prompt_sets, protocol=protocol, device=str(resolve_device(device)),
                                dtype=dtype, loader=loader)
    meta.update(plan.meta())
    note(meta)
    echo(f"fit {plan.method} on {meta['dataset']} ({meta['model']}/{meta['pretrained']}): {shots} shots, "
         f"{len(meta['seeds'])} seed(s), {plan.recipe.name} recipe (views {'+'.join(plan.families)}, text "
         f"{'+'.join(plan.prompt_sets)}), protocol {protocol}, {meta['device']} {dtype}")
    state = fit_method(plan.method, task, plan.hparams)
    queries, labels = load_test(cache, device=meta["device"], dtype=dtype, loader=loader)
    test_acc = score_queries(state, queries, labels)
    records = seed_records(state, meta, test_acc, overrides=overrides)
    report(records, echo)
    echo(f"fit {state.info['fit_seconds']:.2f} s (search {state.info['search_seconds']:.2f} s) for "
         f"{len(meta['seeds'])} seed(s) batched")
    run_dir = save_run(runs_root, state, meta, overrides)
    echo(f"run saved: {run_dir}")
    append_records(results_path(results_dir), records)
    echo(f"records appended: {results_path(results_dir)} ({len(records)})")
    return run_dir, records


def evaluate_run(run_dir: Path, *, cache_path: str | None = None, device: str = "auto",
                 results_dir: str = "results", echo: Echo = print,
                 note: Callable[[dict], None] = lambda meta: None) -> list[dict[str, Any]]:
    """Score a saved run on its cache's test split (the cache id must match); append and print records."""
    from clipbridge.cache.reader import open_cache

    target = resolve_device(device)
    state, meta, overrides = load_run(run_dir, device=target)
    cache = open_cache(cache_path or meta["cache"])
    if str(cache.cache_id) != meta["cache_id"]:
        raise ClipBridgeError(f"cache {cache.path} (id {cache.cache_id}) is not the cache run {run_dir} was "
                              f"fitted on (id {meta['cache_id']}, {meta['cache']})")
    meta = {**meta, "device": str(target)}
    note({key: value for key, value in meta.items() if key != "short_classes"})
    queries, labels = load_test(cache, device=str(target), dtype=meta["dtype"])
    records = seed_records(state, meta, score_queries(state, queries, labels), overrides=overrides)
    echo(f"evaluate {state.method} on {meta['dataset']} ({run_dir}): {meta['shots']} shots")
    report(records, echo)
    append_records(results_path(results_dir), records)
    echo(f"records appended: {results_path(results_dir)} ({len(records)})")
    echo(to_markdown(build_table(records)).rstrip("\n"))
    return records


def report(records: list[dict[str, Any]], echo: Echo) -> None:
    """Per-seed val/test accuracy, then mean ± std over seeds."""
    echo(f"{'seed':>6}  {'val':>7}  {'test':>7}")
    for r in records:
        echo(f"{r['seed']:>6}  {r['val_accuracy']:7.2f}  {r['test_accuracy']:7.2f}")
    echo(f"{'mean':>6}  val {_mean_std([r['val_accuracy'] for r in records])}  "
         f"test {_mean_std([r['test_accuracy'] for r in records])}"
         + ("  [val = test]" if any(r["val_is_test"] for r in records) else ""))


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"
