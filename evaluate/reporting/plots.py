"""Bench plots (matplotlib, Agg backend), each written atomically:

- accuracy versus shots: one panel per dataset plus the average; each method a line with error bars (std
  over seeds) at the shot counts, on a log2 x-axis; where the table holds published accuracies
  (evaluate/reporting/published.py), they are drawn in the method's colour as hollow markers on a dotted line,
  labelled "<method> (paper)" plus a mark (and its note under the title) where the official code chose on
  test data (published.NOTES);
- accuracy versus fit time (SeMoBridge's Fig. 1): mean accuracy over datasets against mean fit seconds per
  seed, log time axis, one line per method and one marker per shot count;
- sensitivity (SeMoBridge's Fig. 6): accuracy against a swept value, one panel per method, one line per
  shot count.
"""
from __future__ import annotations

import math
import os
import tempfile
import zlib
from pathlib import Path
from typing import Sequence

from clipbridge.bridge.recipes import METHOD_NAMES
from clipbridge.evaluate.reporting.published import footnotes
from clipbridge.evaluate.reporting.tables import AVERAGE, Table

SHOT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def method_colour(method: str) -> tuple[float, float, float, float]:
    """The method's colour in every plot: METHOD_NAMES's methods take tab10's first colours in that order;
    any other method a fixed colour of tab20's light half (chosen by a hash of its name, the same in every
    process)."""
    plt = pyplot()
    if method in METHOD_NAMES:
        return plt.get_cmap("tab10")(METHOD_NAMES.index(method))
    return plt.get_cmap("tab20")(1 + 2 * (zlib.crc32(method.encode()) % 10))


def shot_marker(shots: int, all_shots: Sequence[int]) -> str:
    """The marker of a shot count among the plotted ones (in increasing order)."""
    return SHOT_MARKERS[sorted(all_shots).index(shots) % len(SHOT_MARKERS)]


def save_figure(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write `figure` as a PNG atomically (temporary file renamed into place), close it, return the path."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def add_provenance(figure, line: str) -> None:
    """The numbers' model, weights, recipe, protocol and seeds (tables.provenance) as the figure's title, so a
    PNG can be traced."""
    if line:
        figure.suptitle(line, fontsize=9, color="0.3")


def accuracy_vs_shots_figure(table: Table):
    """One panel per dataset (and the average): accuracy (mean ± std over seeds) against shots per method."""
    plt = pyplot()
    panels = table.datasets or ["(no results)"]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows + 0.8), squeeze=False)
    for ax, dataset in zip(axes.flat, panels):
        for method in table.methods:
            points = [(k, table.cells[(dataset, method, k)]) for k in table.shots
                      if (dataset, method, k) in table.cells]
            if not points:
                continue
            ks = [k for k, _ in points]
            style = dict(marker="o", capsize=3, linewidth=1.6, markersize=4, color=method_colour(method),
                         linestyle="--" if method == "zeroshot" else "-")  # the reference line is dashed
            ax.errorbar(ks, [c.mean for _, c in points], yerr=[c.std for _, c in points], label=method, **style)
            papers = [(k, table.published[(dataset, method, k)]) for k in table.shots
                      if (dataset, method, k) in table.published]
            if papers:       # a mark (published.NOTES) when its official code chose on test data
                marks = "".join(dict.fromkeys("".join(p.marks for _, p in papers)))
                ax.plot([k for k, _ in papers], [p.accuracy for _, p in papers], linestyle=":", marker="D",
                        markersize=5, markerfacecolor="none", linewidth=1.2, color=method_colour(method),
                        label=f"{method} (paper{marks})")
        title = dataset + ("  (val = test!)" if dataset in table.val_is_test else "")
        ax.set_title(title, fontsize=11)
        ax.set_xscale("log", base=2)
        if table.shots:
            ax.set_xticks(table.shots)
            ax.set_xticklabels([str(k) for k in table.shots])
        ax.set_xlabel("shots per class")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    legend: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    notes = footnotes(table.published.values())
    add_provenance(figure, "\n".join([table.provenance, *notes]) if notes else table.provenance)
    figure.tight_layout()
    if handles:  # below the panels; savefig's tight bounding box makes room for every row of it
        figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncol=min(len(labels), 3 * columns), frameon=False, fontsize=10)
    return figure


def plot_accuracy_vs_shots(table: Table, path: str | os.PathLike) -> Path:
    """Write the accuracy-versus-shots PNG atomically and return its path."""
    return save_figure(accuracy_vs_shots_figure(table), path)


def accuracy_vs_time_figure(table: Table, seconds: dict[tuple[str, int], float]):
    """Mean accuracy over datasets (table's average row, or its one dataset) against mean fit seconds per
    seed (`seconds[(method, shots)]`, log axis): a line per method through its shot counts, a marker per
    shot count. Cells without a time or an accuracy are left out."""
    plt = pyplot()
    row = AVERAGE if AVERAGE in table.datasets else (table.datasets[0] if table.datasets else None)
    figure, ax = plt.subplots(figsize=(6.4, 4.4))
    shots_seen = set()
    for method in table.methods:
        points = [(seconds[(method, k)], table.cells[(row, method, k)].mean, k) for k in table.shots
                  if (method, k) in seconds and (row, method, k) in table.cells and seconds[(method, k)] > 0]
        if not points:
            continue
        colour = method_colour(method)
        ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, linewidth=1.2, alpha=0.7,
                label=method)
        for x, y, k in points:
            ax.plot([x], [y], linestyle="none", marker=shot_marker(k, table.shots), color=colour, markersize=7,
                    markeredgecolor="black", markeredgewidth=0.5)
            shots_seen.add(k)
    ax.set_xscale("log")
    ax.set_xlabel("fit seconds per seed (log scale; a batched cell's time / its seeds)")
    ax.set_ylabel("top-1 accuracy (%), " + ("mean over datasets" if row == AVERAGE else str(row)))
    ax.set_title("accuracy against fit time")
    add_provenance(figure, table.provenance)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    for k in sorted(shots_seen):
        handles.append(plt.Line2D([], [], linestyle="none", marker=shot_marker(k, table.shots), color="grey",
                                  markeredgecolor="black", markeredgewidth=0.5, markersize=7))
        labels.append(f"{k}-shot")
    if handles:
        ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=9)
    figure.tight_layout()
    return figure


def plot_accuracy_vs_time(table: Table, seconds: dict[tuple[str, int], float], path: str | os.PathLike) -> Path:
    """Write the accuracy-versus-fit-time PNG atomically and return its path."""
    return save_figure(accuracy_vs_time_figure(table, seconds), path)


def sensitivity_figure(title: str, labels: Sequence[str], positions: Sequence[float] | None,
                       curves: dict[str, dict[int, list[tuple[int, float, float]]]], log_x: bool = False,
                       subtitle: str = ""):
    """Accuracy against a swept value: one panel per method (`curves[method][shots]` = [(value index, mean,
    std)]), one line per shot count. `positions` are numeric x positions of the values (None: categorical,
    evenly spaced, labelled by `labels`). `subtitle`: the records' provenance line (tables.provenance)."""
    plt = pyplot()
    methods = list(curves) or ["(no results)"]
    columns = min(3, len(methods))
    rows = math.ceil(len(methods) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.6 * rows + 0.6), squeeze=False)
    xs = list(positions) if positions is not None else list(range(len(labels)))
    all_shots = sorted({k for per_shot in curves.values() for k in per_shot})
    shade = plt.get_cmap("viridis")
    for ax, method in zip(axes.flat, methods):
        for i, k in enumerate(all_shots):
            points = curves.get(method, {}).get(k, [])
            if not points:
                continue
            ax.errorbar([xs[j] for j, _, _ in points], [m for _, m, _ in points], yerr=[s for _, _, s in points],
                        marker=shot_marker(k, all_shots), capsize=3, linewidth=1.4, markersize=5,
                        color=shade(i / max(1, len(all_shots) - 1) * 0.85), label=f"{k}-shot")
        if log_x:
            ax.set_xscale("log")
        if positions is None or len(xs) <= 8:                 # every value labelled, long names slanted
            slanted = max(map(len, labels), default=0) > 6
            ax.set_xticks(xs, labels, rotation=30 if slanted else 0, ha="right" if slanted else "center")
            ax.minorticks_off()
        ax.set_title(method, fontsize=11, color=method_colour(method) if method in curves else "black")
        ax.set_xlabel(title)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, title="shots", title_fontsize=8)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    add_provenance(figure, subtitle)
    figure.tight_layout()
    return figure
