"""What the `fit` and `evaluate` commands do around the Python API (evaluate/fitting/api.py): report, save, record.

The order is the protocol's guarantee: the task is built and the method fitted before the test split is
read (except `paper` on a cache without val, where val is the test split and the output says so).
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from clipbridge.bridge.recipes import DEFAULT_RECIPE
from clipbridge.evaluate.fitting import api
from clipbridge.evaluate.fitting.progress import training_progress
from clipbridge.evaluate.reporting.records import append_new_records, append_records, results_path
from clipbridge.evaluate.reporting.tables import build_table, to_markdown
from clipbridge.bridge.devices import resolve_device

Echo = Callable[[str], None]


def fit_and_report(cache, *, method: str, shots: int, seeds: Sequence[int], recipe: str = DEFAULT_RECIPE,
                   view_families: Sequence[str] | None = None, prompts: Sequence[str] | None = None,
                   protocol: str = "clean", device: str = "auto", dtype: str = "float32", precision: str = "auto",
                   overrides: dict[str, Any] | None = None, runs_root: str = "runs", results_dir: str = "results",
                   echo: Echo = print, note: Callable[[dict], None] = lambda meta: None,
                   progress: bool = True, calibration: str = "temperature") -> tuple[Path, list[dict]]:
    """`clipbridge fit`: api.fit (a training method draws its progress bar on a terminal unless `progress`
    is False), then the test score, a per-seed report, the saved run and the appended records;
    (run dir, records)."""
    with training_progress(f"{method} {shots}-shot", progress):
        run = api.fit(cache, method, shots, seeds, recipe=recipe, protocol=protocol, hparams=overrides,
                      view_families=view_families, prompts=prompts, device=device, dtype=dtype,
                      precision=precision, calibration=calibration)
    meta = run.meta
    note(meta)
    echo(f"fit {method} on {meta['dataset']} ({meta['model']}/{meta['pretrained']}): {shots} shots, "
         f"{len(meta['seeds'])} seed(s), {meta['recipe']} recipe (views {'+'.join(meta['view_families'])}, text "
         f"{'+'.join(meta['prompt_sets'])}), protocol {protocol}, {meta['device']} {dtype}, "
         f"products {meta['precision']}")
    replaced = [key for key in ("view_families", "prompt_sets") if key in run.overrides]
    if replaced:
        echo(f"note: {' and '.join(k.replace('_', ' ') for k in replaced)} given replace the paper recipe's; the "
             "records state them as overrides")
    records = run.evaluate(cache, device=meta["device"])
    report(records, echo)
    echo(f"fit {run.state.info['fit_seconds']:.2f} s (search {run.state.info['search_seconds']:.2f} s) for "
         f"{len(meta['seeds'])} seed(s) batched")
    run_dir = run.save(runs_root)
    echo(f"run saved: {run_dir}")
    append_records(results_path(results_dir), records)
    echo(f"records appended: {results_path(results_dir)} ({len(records)})")
    return run_dir, records


def evaluate_run(run_dir: Path, *, cache_path: str | None = None, device: str = "auto",
                 results_dir: str = "results", cache_root: str | None = "cache", echo: Echo = print,
                 note: Callable[[dict], None] = lambda meta: None, calibration: str | None = None,
                 coverage: float | None = None, conformal: str = "marginal",
                 conformal_score: str = "lac") -> list[dict[str, Any]]:
    """`clipbridge evaluate`: score a saved run on its cache's test split (the cache id must match), with the
    calibration metrics and, given `coverage`, the conformal sets' coverage (Run.evaluate); append the records
    whose result results.jsonl does not already hold (records.append_new_records: evaluating a run twice leaves
    one record per result) and print them."""
    target = str(resolve_device(device))
    run = api.load_run(run_dir, device=target)
    cache = run.open_cache(cache_path, cache_root=cache_root)
    note({key: value for key, value in run.meta.items() if key != "short_classes"})
    records = run.evaluate(cache, device=target, calibration=calibration, coverage=coverage,
                           conformal_score=conformal_score, conformal=conformal)
    echo(f"evaluate {run.method} on {run.meta['dataset']} ({run_dir}): {run.meta['shots']} shots")
    report(records, echo)
    written, unchanged = append_new_records(results_path(results_dir), records)
    echo(f"records appended: {results_path(results_dir)} ({written})"
         + (f"; {unchanged} already there with the same result, not repeated" if unchanged else ""))
    echo(to_markdown(build_table(records)).rstrip("\n"))
    return records


def report(records: list[dict[str, Any]], echo: Echo) -> None:
    """Per-seed val/test accuracy, the test split's mean top-1 probability, ECE, NLL and Brier score (raw ->
    calibrated) and, when measured, the conformal sets' coverage and mean size; then mean ± std over seeds."""
    calibrated = all("ece" in r for r in records)
    sets = all("coverage" in r for r in records)
    header = f"{'seed':>6}  {'val':>7}  {'test':>7}"
    if calibrated:
        header += f"  {'T':>8}  {'confidence':>15}  {'ECE':>15}  {'NLL':>15}  {'Brier':>15}"
    if sets:
        header += f"  {'coverage':>8}  {'set size':>8}"
    echo(header)
    for r in records:
        line = f"{r['seed']:>6}  {r['val_accuracy']:7.2f}  {r['test_accuracy']:7.2f}"
        if calibrated:
            line += f"  {r['temperature']:8.4g}" + "".join(
                f"  {r[name + '_raw']:6.4f} -> {r[name]:6.4f}" for name in ("confidence", "ece", "nll", "brier"))
        if sets:
            line += f"  {r['coverage']:8.4f}  {r['mean_set_size']:8.2f}"
        echo(line)
    echo(f"{'mean':>6}  val {_mean_std([r['val_accuracy'] for r in records])}  "
         f"test {_mean_std([r['test_accuracy'] for r in records])}"
         + ("  [val = test]" if any(r["val_is_test"] for r in records) else ""))
    if calibrated:
        echo(f"{'':>6}  calibration {records[0]['calibration']}: ECE {_mean_std([r['ece'] for r in records], 4)} "
             f"(raw {_mean_std([r['ece_raw'] for r in records], 4)}), mean top-1 probability "
             f"{_mean_std([r['confidence'] for r in records], 4)}")
    if sets:
        r = records[0]
        echo(f"{'':>6}  conformal sets at coverage {r['coverage_level']:g} ({r['conformal_score']}, "
             f"{r['conformal_mode']}): coverage {_mean_std([x['coverage'] for x in records], 4)}, mean set size "
             f"{_mean_std([x['mean_set_size'] for x in records])}; calibrated on {r['conformal_images']} held-out "
             f"image(s) per seed: {r['conformal_source']}")


def _mean_std(values: list[float], digits: int = 2) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"
