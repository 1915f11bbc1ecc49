"""What a reader of a matplotlib figure sees besides the data, for the tests of the project's figures."""
from __future__ import annotations

from typing import Any


def figure_labels(figure) -> dict[str, Any]:
    """Per axes its title and x/y labels and legend entries, the figure legends' entries, and the figure's
    title (suptitle)."""
    axes = [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
             "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []}
            for ax in figure.axes if ax.axison]
    legends = [[t.get_text() for t in legend.get_texts()] for legend in figure.legends]
    return {"title": figure.get_suptitle(), "axes": axes, "figure_legends": legends}
