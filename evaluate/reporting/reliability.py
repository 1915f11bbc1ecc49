"""Reliability diagrams and the calibration table from result records. The diagram: per method, the test accuracy in each bin of top-1 confidence
against the bin's mean confidence (a perfectly calibrated model sits on the diagonal), before (the softmax
of the method's logits) and after calibration, for one dataset and shot count.

The points are the records' reliability bins (evaluate.fitting.calibrate.CalibrationScores, 15 equal-width
bins), pooled over seeds: counts add up, and each bin's mean confidence and accuracy are weighted by its
counts. The legend gives the pooled ECE of each curve (the same bins' |accuracy − confidence| weighted by
their share of the queries); a point's area grows with its bin's share of the queries. The table (calibration.md): per dataset and method, for each shot count, the test
ECE and the mean top-1 probability before -> after calibration beside the accuracy, means over seeds.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from clipbridge.bridge.recipes import order_methods

RELIABILITY_PNG = "reliability.png"
CALIBRATION_MD = "calibration.md"


def pooled_bins(records: Iterable[dict[str, Any]], key: str) -> dict[str, list[float]] | None:
    """Bins of `key` ("reliability" or "reliability_raw") pooled over records: {"count", "confidence",
    "accuracy"} (None where a bin is empty everywhere); None when no record has them."""
    count: list[float] = []
    confidence: list[float] = []
    accuracy: list[float] = []
    for record in records:
        bins = record.get(key)
        if not bins:
            continue
        if not count:
            count, confidence, accuracy = ([0.0] * len(bins["count"]) for _ in range(3))
        for b, n in enumerate(bins["count"]):
            if n:
                count[b] += n
                confidence[b] += n * bins["confidence"][b]
                accuracy[b] += n * bins["accuracy"][b]
    if not count:
        return None
    return {"count": count, "confidence": [c / n if n else None for c, n in zip(confidence, count)],
            "accuracy": [a / n if n else None for a, n in zip(accuracy, count)]}


def binned_ece(bins: dict[str, list[float]]) -> float:
    """Σ_b (n_b / N) |accuracy_b − confidence_b| of pooled bins."""
    total = sum(bins["count"])
    return sum(n / total * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"]) if n)


def reliability_selection(records: list[dict[str, Any]]) -> tuple[str, int, list[dict[str, Any]]] | None:
    """(dataset, shots, records) that the diagram shows: the first in-distribution dataset (sorted) at its
    largest shot count, its records carrying reliability bins; None when no record has them."""
    usable = [r for r in records if r.get("reliability") and r["dataset"] == r.get("eval_dataset", r["dataset"])]
    if not usable:
        return None
    dataset = sorted({r["dataset"] for r in usable})[0]
    shots = max(r["shots"] for r in usable if r["dataset"] == dataset)
    return dataset, shots, [r for r in usable if r["dataset"] == dataset and r["shots"] == shots]


def reliability_figure(records: list[dict[str, Any]]):
    """The figure of reliability_selection(records): one panel per method (canonical order)."""
    from clipbridge.evaluate.reporting.plots import method_colour, pyplot

    chosen = reliability_selection(records)
    if chosen is None:
        raise ValueError("no record carries reliability bins")
    dataset, shots, selected = chosen
    methods = order_methods({r["method"] for r in selected})
    columns = min(3, len(methods))
    rows = -(-len(methods) // columns)
    plt = pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.3 * rows), squeeze=False)
    for axis, method in zip(axes.flat, methods):
        mine = [r for r in selected if r["method"] == method]
        axis.plot([0, 1], [0, 1], linestyle=":", color="0.5", linewidth=1)
        for key, label, colour, style, marker in (("reliability_raw", "softmax of logits", "black", "--", "x"),
                                                   ("reliability", "calibrated", method_colour(method), "-", "o")):
            bins = pooled_bins(mine, key)
            if bins is None:
                continue
            points = [(c, a, n) for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"]) if n]
            total = sum(n for _, _, n in points)
            axis.plot([c for c, _, _ in points], [a for _, a, _ in points], style, color=colour, linewidth=1.2,
                      alpha=0.55 if key == "reliability_raw" else 1.0,
                      label=f"{label} (ECE {binned_ece(bins):.3f})")
            axis.scatter([c for c, _, _ in points], [a for _, a, _ in points], marker=marker, color=colour,
                         s=[4 + 120 * n / total for _, _, n in points], zorder=3,
                         alpha=0.55 if key == "reliability_raw" else 1.0)
        temperatures = sorted({round(float(r.get("temperature", 1.0)), 3) for r in mine})
        axis.set_title(f"{method} (T {', '.join(f'{t:g}' for t in temperatures[:3])})", fontsize=9)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("top-1 probability (bin mean; area: share of images)", fontsize=8)
        axis.set_ylabel("test accuracy in bin", fontsize=8)
        axis.legend(fontsize=7, loc="upper left")
    for axis in list(axes.flat)[len(methods):]:
        axis.set_visible(False)
    seeds = sorted({r["seed"] for r in selected})
    figure.suptitle(f"Reliability on {dataset}, {shots} shots, seeds {', '.join(map(str, seeds))} pooled "
                    f"({selected[0]['model']}/{selected[0]['pretrained']})", fontsize=10)
    figure.tight_layout()
    return figure


def plot_reliability(records: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Write the reliability diagram of `records` to `path` (PNG, atomically); None when no record has bins
    (records written before calibration was measured)."""
    from clipbridge.evaluate.reporting.plots import save_figure

    if reliability_selection(records) is None:
        return None
    return save_figure(reliability_figure(records), path)


def calibration_markdown(records: list[dict[str, Any]]) -> str | None:
    """The calibration table of the in-distribution records that carry metrics (None when none do): one row
    per (dataset, method, shots) with accuracy, mean top-1 probability and ECE, raw -> calibrated, and the
    mean temperature, averaged over seeds."""
    usable = [r for r in records if "ece" in r and r["dataset"] == r.get("eval_dataset", r["dataset"])]
    if not usable:
        return None
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for record in usable:
        groups.setdefault((record["dataset"], record["method"], record["shots"]), []).append(record)
    rank = {m: i for i, m in enumerate(order_methods({r["method"] for r in usable}))}
    mean = lambda rows, key: sum(float(r[key]) for r in rows) / len(rows)
    lines = ["Calibration on the test split, mean over seeds: accuracy (%), mean top-1 probability and expected "
             "calibration error (15 bins), softmax of the logits -> calibrated (temperature per seed, fitted on "
             "the validation images the method selected on).", "",
             "| dataset | method | shots | seeds | accuracy | top-1 probability | ECE | temperature |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, method, shots), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], rank[kv[0][1]], kv[0][2])):
        lines.append(f"| {dataset} | {method} | {shots} | {len(rows)} | {mean(rows, 'test_accuracy'):.2f} | "
                     f"{mean(rows, 'confidence_raw'):.3f} -> {mean(rows, 'confidence'):.3f} | "
                     f"{mean(rows, 'ece_raw'):.3f} -> {mean(rows, 'ece'):.3f} | {mean(rows, 'temperature'):.3g} |")
    return "\n".join(lines) + "\n"
