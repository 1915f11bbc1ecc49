"""Bench plots (matplotlib, Agg backend), each written atomically:

Every method has one colour and one marker in every plot (`method_style`: SeMoBridge and SeMoBridge-T, or
any two methods, never share either).

- accuracy versus shots: one panel per dataset plus the average; each method a line with error bars (std
  over seeds) at the shot counts, on a log2 x-axis, each method's points moved sideways by a fixed small
  step around the shot count (`spread`) so that error bars do not hide each other; where the table holds published accuracies
  (evaluate/reporting/published.py), they are drawn in the method's colour as hollow markers on a dotted line,
  labelled "<method> (paper)" plus a mark (and its note under the title) where the official code chose on
  test data (published.NOTES);
- accuracy versus fit time (SeMoBridge's Fig. 1): mean accuracy over datasets against mean fit seconds per
  seed (the method's fit alone: no model loading, start-up or torch's first-use set-up, which the bench
  does before its first fit), log time axis, one line per method in its marker, each point labelled
  with its shot count;
- sensitivity (SeMoBridge's Fig. 6): accuracy against a swept value, one panel per method, one line per
  shot count.
"""
from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Sequence

from clipbridge.evaluate.reporting.files import atomic_file
from clipbridge.evaluate.reporting.published import footnotes
from clipbridge.evaluate.reporting.tables import AVERAGE, Table

SHOT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")

# (colour, marker) of each method in every plot: matplotlib's tab10 colours and zero-shot in grey (it is
# the dashed reference line), one marker each, so that no two methods share a colour or a marker.
METHOD_STYLES = {
    "zeroshot": ("#7f7f7f", "x"),
    "linear-probe": ("#000000", "h"),
    "clip-adapter": ("#bcbd22", ">"),
    "tip-adapter": ("#ff7f0e", "v"),
    "tip-adapter-f": ("#8c564b", "<"),
    "ape": ("#9467bd", "D"),
    "ape-t": ("#e377c2", "d"),
    "gda": ("#17becf", "P"),
    "cmm": ("#2ca02c", "^"),
    "semobridge": ("#1f77b4", "o"),
    "semobridge-t": ("#d62728", "s"),
}
OTHER_MARKERS = ("p", "*", "8", "H", "X", "1", "2", "3", "4", "+")
SPREAD_STEP = 0.045           # log2 units between neighbouring methods' points at one shot count


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def method_style(method: str) -> tuple[tuple[float, float, float, float], str]:
    """(RGBA colour, matplotlib marker) of the method in every plot: METHOD_STYLES for the registered methods;
    any other method a colour of tab20's light half and a marker of OTHER_MARKERS, both chosen by a hash of
    its name (the same in every process)."""
    from matplotlib.colors import to_rgba

    if method in METHOD_STYLES:
        colour, marker = METHOD_STYLES[method]
        return to_rgba(colour), marker
    digest = zlib.crc32(method.encode())
    return pyplot().get_cmap("tab20")(1 + 2 * (digest % 10)), OTHER_MARKERS[(digest // 10) % len(OTHER_MARKERS)]


def method_colour(method: str) -> tuple[float, float, float, float]:
    """The method's colour in every plot (method_style)."""
    return method_style(method)[0]


def edge_colour(marker: str, colour) -> object:
    """A thin black outline for filled markers; an unfilled one (x, +) is all edge and keeps its colour."""
    from matplotlib.markers import MarkerStyle

    return "black" if MarkerStyle(marker).is_filled() else colour


def spread(shots: float, index: int, count: int) -> float:
    """The x position of the `index`-th of `count` methods' point at `shots` on a log2 axis: moved by
    SPREAD_STEP log2 units per method, centred on the shot count."""
    return shots * 2 ** (SPREAD_STEP * (index - (count - 1) / 2))


def shot_marker(shots: int, all_shots: Sequence[int]) -> str:
    """The marker of a shot count among the plotted ones (in increasing order)."""
    return SHOT_MARKERS[sorted(all_shots).index(shots) % len(SHOT_MARKERS)]


def save_figure(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write `figure` as a PNG atomically (temporary file renamed into place), close it, return the path."""
    plt = pyplot()
    try:
        with atomic_file(path, suffix=".png", mode=0o644) as temporary:
            figure.savefig(temporary, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(figure)
    return Path(path)


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
        for index, method in enumerate(table.methods):
            points = [(k, table.cells[(dataset, method, k)]) for k in table.shots
                      if (dataset, method, k) in table.cells]
            if not points:
                continue
            ks = [spread(k, index, len(table.methods)) for k, _ in points]
            colour, marker = method_style(method)
            style = dict(marker=marker, capsize=3, linewidth=1.6, markersize=5, color=colour,
                         linestyle="--" if method == "zeroshot" else "-")  # the reference line is dashed
            ax.errorbar(ks, [c.mean for _, c in points], yerr=[c.std for _, c in points], label=method, **style)
            papers = [(k, table.published[(dataset, method, k)]) for k in table.shots
                      if (dataset, method, k) in table.published]
            if papers:       # a mark (published.NOTES) when its official code chose on test data
                marks = "".join(dict.fromkeys("".join(p.marks for _, p in papers)))
                ax.plot([k for k, _ in papers], [p.accuracy for _, p in papers], linestyle=":", marker="D",
                        markersize=5, markerfacecolor="none", linewidth=1.2, color=colour,
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
    seed (`seconds[(method, shots)]`, log axis): a line per method through its shot counts in the method's
    colour and marker, each point labelled with its shot count. Cells without a time or an accuracy are left
    out."""
    plt = pyplot()
    row = AVERAGE if AVERAGE in table.datasets else (table.datasets[0] if table.datasets else None)
    figure, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in table.methods:
        points = [(seconds[(method, k)], table.cells[(row, method, k)].mean, k) for k in table.shots
                  if (method, k) in seconds and (row, method, k) in table.cells and seconds[(method, k)] > 0]
        if not points:
            continue
        colour, marker = method_style(method)
        ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, linewidth=1.2, marker=marker,
                markersize=7, markeredgecolor=edge_colour(marker, colour), markeredgewidth=0.5, label=method)
        for x, y, k in points:
            ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=colour)
    ax.set_xscale("log")
    ax.set_xlabel("fit seconds per seed, the fit alone (log scale; no model loading or start-up;\n"
                  "a batched cell's time / its seeds; numbers at the points: shots)")
    ax.set_ylabel("top-1 accuracy (%), " + ("mean over datasets" if row == AVERAGE else str(row)))
    ax.set_title("accuracy against fit time")
    add_provenance(figure, table.provenance)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
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
