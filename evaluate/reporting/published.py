"""Published accuracies (RECIPES.md §3) shipped as data (evaluate/reporting/published.csv), to put next to ours.

A published row matches a result of ours when model, weights, method, dataset and shot count are the same
(zero-shot rows have shots 0 and match every shot count; dataset "average" is the 11-dataset average and
matches only an average over exactly those 11 datasets). They come from the authors' protocol (the full
val split; ImageNet's val is its test set), so a difference can be the protocol as well as the method.

The `published` command (evaluate/commands/published.py) prints them.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "published.csv"
AVERAGE = "average"


@dataclass(frozen=True)
class Published:
    """One published accuracy (percent) and where it comes from."""

    model: str
    pretrained: str
    method: str
    dataset: str
    shots: int
    accuracy: float
    source: str


@lru_cache(maxsize=1)
def published_rows() -> tuple[Published, ...]:
    """Every row of evaluate/reporting/published.csv."""
    with open(DATA, encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return tuple(Published(r["model"], r["pretrained"], r["method"], r["dataset"], int(r["shots"]),
                           float(r["accuracy"]), r["source"]) for r in csv.DictReader(lines))


def find_published(model: str, pretrained: str, method: str, dataset: str, shots: int) -> Published | None:
    """The published row matching one result of ours, or None."""
    wanted = 0 if method == "zeroshot" else int(shots)
    for row in published_rows():
        if (row.model, row.pretrained, row.method, row.dataset, row.shots) == (model, pretrained, method, dataset,
                                                                                wanted):
            return row
    return None
