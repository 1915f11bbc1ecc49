"""Published accuracies (RECIPES.md §3) shipped as data (evaluate/reporting/published.csv), to put next to ours.

A published row matches a result of ours when model, weights, method, dataset and shot count are the same
(zero-shot rows have shots 0 and match every shot count; dataset "average" is the 11-dataset average and
matches only an average over exactly those 11 datasets). They come from the authors' protocol (the full
val split; ImageNet's val is its test set), so a difference can be the protocol as well as the method.

    clipbridge published --model ViT-B-16 --method semobridge-t --shots 16
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import click

DATA = Path(__file__).resolve().parent / "published.csv"
COOP_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
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


@click.command("published")
@click.option("--model", default=None, help="e.g. ViT-B-16 or RN50.")
@click.option("--method", default=None, help="e.g. semobridge-t (clipbridge's method names).")
@click.option("--dataset", default=None, help="a CoOp dataset name, or average.")
@click.option("--shots", default=None, type=int)
def published(model, method, dataset, shots) -> None:
    """Print the published accuracies (RECIPES.md §3) matching the filters, with their sources."""
    rows = [r for r in published_rows()
            if (model is None or r.model == model) and (method is None or r.method == method)
            and (dataset is None or r.dataset == dataset)
            and (shots is None or r.shots == shots or (r.method == "zeroshot" and r.shots == 0))]
    if not rows:
        click.echo("no published row matches")
        return
    click.echo(f"{'model':<9} {'method':<14} {'dataset':<15} {'shots':>5} {'top-1':>6}  source")
    for r in rows:
        click.echo(f"{r.model:<9} {r.method:<14} {r.dataset:<15} {r.shots:>5} {r.accuracy:>6.2f}  {r.source}")
