"""Records -> accuracy tables (mean ± std over seeds), as CSV and Markdown.

A table has one row per (dataset, method) and one column per shot count; datasets evaluated out of
distribution are labelled `source->target`; `average` rows average the in-distribution datasets seed by
seed (present only when every dataset has that seed). Records of several models (or weights) are never
averaged together: their labels then carry the model, and each model gets its own average. Where a cell
matches a published accuracy (evaluate/reporting/published.py: same model, weights, method, dataset and shots) the
table holds it and our difference. Everything is derived from the records' accuracies (never from
timings) and sorted, with fixed float formatting, so the same records give byte-identical files.
`fit_seconds_per_seed` gathers the timings apart, for the accuracy-versus-time plot.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from clipbridge.bridge.recipes import order_methods
from clipbridge.bridge.recipes.common import COOP_DATASETS
from clipbridge.cache.coverage import format_ranges
from clipbridge.evaluate.reporting.published import Published, find_published, footnotes

AVERAGE = "average"
PUBLISHED_NOTE = ("paper = the published accuracy (RECIPES.md §3, the authors' protocol: full val split, ImageNet "
                  "val = test); Δ = ours − paper")


@dataclass(frozen=True)
class Cell:
    """Accuracy of one (dataset, method, shots): mean and sample std over seeds (std 0 for one seed)."""

    mean: float
    std: float
    seeds: int


@dataclass(frozen=True)
class Table:
    datasets: list[str]                       # row groups, sorted, the averages last
    methods: list[str]                        # canonical order
    shots: list[int]
    cells: dict[tuple[str, str, int], Cell]   # (dataset label, method, shots) -> Cell
    val_is_test: list[str]                    # dataset labels with at least one val=test record
    published: dict[tuple[str, str, int], Published] = field(default_factory=dict)   # matching cells only
    caption: str = ""                         # model(s), weights, recipe(s), protocol(s), seeds
    provenance: str = ""                      # the caption's short form, a figure's subtitle


def model_key(record: dict[str, Any]) -> str:
    """'ViT-B-16/openai': the model and weights of a record."""
    return f"{record.get('model', '?')}/{record.get('pretrained', '?')}"


def dataset_label(record: dict[str, Any], with_model: bool = False) -> str:
    source, target = record["dataset"], record.get("eval_dataset") or record["dataset"]
    label = source if source == target else f"{source}->{target}"
    return f"{label} ({model_key(record)})" if with_model else label


def build_table(records: Iterable[dict[str, Any]]) -> Table:
    """Aggregate records (one per dataset, model, method, shots, seed; dedupe first) into a Table."""
    records = list(records)
    models = sorted({model_key(r) for r in records})
    several = len(models) > 1
    per_seed: dict[tuple[str, str, int], dict[int, float]] = {}
    in_distribution: dict[str, set[str]] = {}            # model -> in-distribution dataset labels
    identity: dict[str, dict[str, Any]] = {}              # label -> the record fields that identify it
    flagged: set[str] = set()
    for record in records:
        label = dataset_label(record, several)
        identity.setdefault(label, record)
        if record["dataset"] == (record.get("eval_dataset") or record["dataset"]):
            in_distribution.setdefault(model_key(record), set()).add(label)
        if record.get("val_is_test"):
            flagged.add(label)
        per_seed.setdefault((label, record["method"], int(record["shots"])), {})[int(record["seed"])] = \
            float(record["test_accuracy"])
    methods = order_methods({m for _, m, _ in per_seed})
    shots = sorted({k for _, _, k in per_seed})
    datasets = sorted({d for d, _, _ in per_seed})
    cells = {key: _cell([values[s] for s in sorted(values)]) for key, values in per_seed.items()}
    published = {}
    for (label, method, k) in per_seed:
        record = identity[label]
        if label in in_distribution.get(model_key(record), set()):
            match = find_published(record.get("model", ""), record.get("pretrained", ""), method, record["dataset"], k)
            if match:
                published[(label, method, k)] = match
    for model in models:
        labels = sorted(in_distribution.get(model, set()))
        if len(labels) < 2:
            continue
        average = f"{AVERAGE} ({model})" if several else AVERAGE
        datasets.append(average)
        covers_coop = {identity[label]["dataset"] for label in labels} == set(COOP_DATASETS)
        name, weights = model.split("/", 1)
        for method in methods:
            for k in shots:
                runs = [per_seed.get((d, method, k), {}) for d in labels]
                common = sorted(set.intersection(*(set(r) for r in runs)))
                if common:
                    cells[(average, method, k)] = _cell([sum(r[s] for r in runs) / len(runs) for s in common])
                    match = find_published(name, weights, method, AVERAGE, k) if covers_coop else None
                    if match:
                        published[(average, method, k)] = match
    return Table(datasets, methods, shots, cells, sorted(flagged), published, _caption(records),
                 provenance(records))


def _listed(records: list[dict[str, Any]], key: str) -> str:
    return ", ".join(sorted({str(r.get(key, "?")) for r in records})) or "?"


def _seeds(records: list[dict[str, Any]]) -> str:
    seeds = sorted({int(r["seed"]) for r in records})
    return format_ranges(seeds) if seeds else "-"


def _caption(records: list[dict[str, Any]]) -> str:
    """One line stating what the numbers are: models and weights, recipes, protocols, seeds."""
    return (f"Top-1 accuracy (%) on the test split, mean ± std over seeds {_seeds(records)}; "
            f"model {', '.join(sorted({model_key(r) for r in records})) or '?'}; recipe {_listed(records, 'recipe')}; "
            f"protocol {_listed(records, 'protocol')}.")


def provenance(records: list[dict[str, Any]]) -> str:
    """'ViT-B-16/openai · recipe paper · protocol coop · seeds 1-3': the caption's short form."""
    if not records:
        return ""
    return (f"{', '.join(sorted({model_key(r) for r in records}))} · recipe {_listed(records, 'recipe')} · "
            f"protocol {_listed(records, 'protocol')} · seeds {_seeds(records)}")


def to_csv(table: Table) -> str:
    """dataset, method, then `<K>-shot mean`, `<K>-shot std`, `<K>-shot seeds` per shot count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["dataset", "method"]
    with_paper = bool(table.published)
    for k in table.shots:
        header += [f"{k}-shot mean", f"{k}-shot std", f"{k}-shot seeds"]
        header += [f"{k}-shot paper", f"{k}-shot diff"] if with_paper else []
    writer.writerow(header)
    for dataset in table.datasets:
        for method in table.methods:
            row = [dataset, method]
            present = False
            for k in table.shots:
                cell = table.cells.get((dataset, method, k))
                present |= cell is not None
                row += [f"{cell.mean:.2f}", f"{cell.std:.2f}", str(cell.seeds)] if cell else ["", "", ""]
                if with_paper:
                    paper = table.published.get((dataset, method, k))
                    row += [f"{paper.accuracy:.2f}", f"{cell.mean - paper.accuracy:+.2f}"] if paper and cell else ["", ""]
            if present:
                writer.writerow(row)
    return out.getvalue()


def to_markdown(table: Table, skipped: dict[str, dict[str, str]] | None = None) -> str:
    """One Markdown table per dataset (and the average) under the table's caption: rows = methods, columns =
    shots, `mean ± std` (and the published value with our difference where there is one).

    skipped {source dataset: {method: reason}}: methods not run on a dataset (the cache lacks an input
    they need) get a row of "skipped" cells there (and in the average) and the reason below the table.
    """
    skipped = skipped or {}
    blocks = [table.caption + (f" {PUBLISHED_NOTE}." if table.published else "")] if table.caption else []
    for dataset in table.datasets:
        source = dataset.split("->")[0].split(" (")[0]
        not_run = {m: r for d, reasons in skipped.items() if d == source or dataset.startswith(AVERAGE)
                   for m, r in reasons.items()}
        lines = [f"### {dataset}", "",
                 "| method | " + " | ".join(f"{k}-shot" for k in table.shots) + " |",
                 "|---|" + "---|" * len(table.shots)]
        for method in order_methods([*table.methods, *not_run]):
            cells = [table.cells.get((dataset, method, k)) for k in table.shots]
            if method in not_run:
                lines.append(f"| {method} | " + " | ".join(["skipped*"] * len(table.shots)) + " |")
            elif any(cells):
                text = [_markdown_cell(c, table.published.get((dataset, method, k))) for c, k in zip(cells, table.shots)]
                lines.append(f"| {method} | " + " | ".join(text) + " |")
        for method, reason in sorted(not_run.items()):
            lines += ["", f"\\* {method} skipped: {reason}"]
        notes = footnotes(table.published[(dataset, m, k)] for m in table.methods for k in table.shots
                          if (dataset, m, k) in table.published)
        lines += ["", *notes] if notes else []
        if dataset in table.val_is_test:
            lines += ["", "**Warning: validation = test on this dataset (paper protocol test leak).**"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _markdown_cell(cell: Cell | None, paper: Published | None) -> str:
    if cell is None:
        return "–"
    text = f"{cell.mean:.2f} ± {cell.std:.2f}"
    return text + (f" (paper {paper.accuracy:.2f}{paper.marks}, Δ {cell.mean - paper.accuracy:+.2f})" if paper else "")


def table_summary(table: Table) -> dict[str, Any]:
    """JSON-able form of the table: {dataset: {method: {shots: {mean, std, seeds}}}}."""
    summary: dict[str, Any] = {}
    for (dataset, method, k), cell in sorted(table.cells.items()):
        entry = {"mean": round(cell.mean, 4), "std": round(cell.std, 4), "seeds": cell.seeds}
        paper = table.published.get((dataset, method, k))
        if paper:
            entry.update(paper=paper.accuracy, paper_source=paper.source)
            if paper.marks:
                entry.update(paper_notes=footnotes([paper]))
        summary.setdefault(dataset, {}).setdefault(method, {})[str(k)] = entry
    return summary


def fit_seconds_per_seed(records: Iterable[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """{(method, shots): mean fit seconds per seed} over the in-distribution records of every dataset; a
    record's seconds are its batched cell's `fit_seconds` divided by `seeds_batched` (1 when absent)."""
    seconds: dict[tuple[str, int], list[float]] = {}
    for record in records:
        if dataset_label(record) == record["dataset"] and "fit_seconds" in record:
            per_seed = float(record["fit_seconds"]) / max(1, int(record.get("seeds_batched") or 1))
            seconds.setdefault((record["method"], int(record["shots"])), []).append(per_seed)
    return {key: sum(values) / len(values) for key, values in sorted(seconds.items())}


def _cell(values: list[float]) -> Cell:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Cell(mean, std, n)
