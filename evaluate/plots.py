"""Accuracy-versus-shots plot (matplotlib, Agg backend): one panel per dataset plus the average.

Each method is a line with error bars (std over seeds) at the shot counts, on a log2 x-axis; where the
table holds published accuracies (evaluate/published.py), they are drawn in the method's colour as hollow
markers on a dotted line, labelled "<method> (paper)".
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from clipbridge.evaluate.tables import Table


def plot_accuracy_vs_shots(table: Table, path: str | os.PathLike) -> Path:
    """Write the PNG atomically and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = table.datasets or ["(no results)"]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows + 0.8), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, dataset in zip(axes.flat, panels):
        for i, method in enumerate(table.methods):
            points = [(k, table.cells[(dataset, method, k)]) for k in table.shots
                      if (dataset, method, k) in table.cells]
            if not points:
                continue
            ks = [k for k, _ in points]
            style = dict(marker="o", capsize=3, linewidth=1.6, markersize=4, color=colours(i % 10),
                         linestyle="--" if method == "zeroshot" else "-")  # the reference line is dashed
            ax.errorbar(ks, [c.mean for _, c in points], yerr=[c.std for _, c in points], label=method, **style)
            papers = [(k, table.published[(dataset, method, k)].accuracy) for k in table.shots
                      if (dataset, method, k) in table.published]
            if papers:
                ax.plot([k for k, _ in papers], [a for _, a in papers], linestyle=":", marker="D", markersize=5,
                        markerfacecolor="none", linewidth=1.2, color=colours(i % 10), label=f"{method} (paper)")
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
    figure.tight_layout()
    if handles:  # below the panels; savefig's tight bounding box makes room for every row of it
        figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncol=min(len(labels), 3 * columns), frameon=False, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120, bbox_inches="tight", metadata={"Software": None})
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path
