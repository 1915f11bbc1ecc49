"""`clipbridge published`: the published accuracies (evaluate/reporting/published.csv) matching filters.

    clipbridge published --model ViT-B-16 --method semobridge-t --shots 16
"""
from __future__ import annotations

import click

from clipbridge.evaluate.reporting.published import footnotes, published_rows


@click.command("published")
@click.option("--model", default=None, help="e.g. ViT-B-16 or RN50.")
@click.option("--method", default=None, help="e.g. semobridge-t (clipbridge's method names).")
@click.option("--dataset", default=None, help="a CoOp dataset name, or average.")
@click.option("--shots", default=None, type=int)
def published(model, method, dataset, shots) -> None:
    """Print the published accuracies (RECIPES.md §3) matching the filters, with their sources; a mark after
    a number says its official code chose something on test data (the footnotes below the list)."""
    rows = [r for r in published_rows()
            if (model is None or r.model == model) and (method is None or r.method == method)
            and (dataset is None or r.dataset == dataset)
            and (shots is None or r.shots == shots or (r.method == "zeroshot" and r.shots == 0))]
    if not rows:
        click.echo("no published row matches")
        return
    click.echo(f"{'model':<9} {'method':<14} {'dataset':<15} {'shots':>5} {'top-1':>6}  source")
    for r in rows:
        click.echo(f"{r.model:<9} {r.method:<14} {r.dataset:<15} {r.shots:>5} {r.accuracy:>6.2f}{r.marks:<2} "
                   f"{r.source}")
    for line in footnotes(rows):
        click.echo(line)
