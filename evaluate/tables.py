"""Records -> accuracy tables (mean ± std over seeds), as CSV and Markdown.

A table has one row per (dataset, method) and one column per shot count; datasets evaluated out of
distribution are labelled `source->target`; `average` rows average the in-distribution datasets seed by
seed (present only when every dataset has that seed). Everything is derived from the records' accuracies
(never from timings) and sorted, with fixed float formatting, so the same records give byte-identical
files.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Iterable

AVERAGE = "average"
METHOD_ORDER = ("zeroshot", "linear-probe", "clip-adapter", "tip-adapter", "tip-adapter-f", "ape", "ape-t", "gda",
                "cmm", "semobridge", "semobridge-t")


@dataclass(frozen=True)
class Cell:
    """Accuracy of one (dataset, method, shots): mean and sample std over seeds (std 0 for one seed)."""

    mean: float
    std: float
    seeds: int


@dataclass(frozen=True)
class Table:
    datasets: list[str]                       # row groups, sorted, AVERAGE last when present
    methods: list[str]                        # canonical order
    shots: list[int]
    cells: dict[tuple[str, str, int], Cell]   # (dataset label, method, shots) -> Cell
    val_is_test: list[str]                    # dataset labels with at least one val=test record


def order_methods(names: Iterable[str]) -> list[str]:
    """Known methods in METHOD_ORDER, then any others alphabetically."""
    names = set(names)
    known = [m for m in METHOD_ORDER if m in names]
    return known + sorted(names - set(known))


def dataset_label(record: dict[str, Any]) -> str:
    source, target = record["dataset"], record.get("eval_dataset") or record["dataset"]
    return source if source == target else f"{source}->{target}"


def build_table(records: Iterable[dict[str, Any]]) -> Table:
    """Aggregate records (one per dataset, method, shots, seed; dedupe first) into a Table."""
    per_seed: dict[tuple[str, str, int], dict[int, float]] = {}
    in_distribution: set[str] = set()
    flagged: set[str] = set()
    for record in records:
        label = dataset_label(record)
        if label == record["dataset"]:
            in_distribution.add(label)
        if record.get("val_is_test"):
            flagged.add(label)
        per_seed.setdefault((label, record["method"], int(record["shots"])), {})[int(record["seed"])] = \
            float(record["test_accuracy"])
    methods = order_methods({m for _, m, _ in per_seed})
    shots = sorted({k for _, _, k in per_seed})
    datasets = sorted({d for d, _, _ in per_seed})
    cells = {key: _cell([values[s] for s in sorted(values)]) for key, values in per_seed.items()}
    if len(in_distribution) > 1:
        datasets.append(AVERAGE)
        for method in methods:
            for k in shots:
                runs = [per_seed.get((d, method, k), {}) for d in sorted(in_distribution)]
                common = sorted(set.intersection(*(set(r) for r in runs)))
                if common:
                    cells[(AVERAGE, method, k)] = _cell([sum(r[s] for r in runs) / len(runs) for s in common])
    return Table(datasets, methods, shots, cells, sorted(flagged))


def to_csv(table: Table) -> str:
    """dataset, method, then `<K>-shot mean`, `<K>-shot std`, `<K>-shot seeds` per shot count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["dataset", "method"]
    for k in table.shots:
        header += [f"{k}-shot mean", f"{k}-shot std", f"{k}-shot seeds"]
    writer.writerow(header)
    for dataset in table.datasets:
        for method in table.methods:
            row = [dataset, method]
            present = False
            for k in table.shots:
                cell = table.cells.get((dataset, method, k))
                present |= cell is not None
                row += [f"{cell.mean:.2f}", f"{cell.std:.2f}", str(cell.seeds)] if cell else ["", "", ""]
            if present:
                writer.writerow(row)
    return out.getvalue()


def to_markdown(table: Table) -> str:
    """One Markdown table per dataset (and the average): rows = methods, columns = shots, `mean ± std`."""
    blocks = []
    for dataset in table.datasets:
        lines = [f"### {dataset}", "",
                 "| method | " + " | ".join(f"{k}-shot" for k in table.shots) + " |",
                 "|---|" + "---|" * len(table.shots)]
        for method in table.methods:
            cells = [table.cells.get((dataset, method, k)) for k in table.shots]
            if any(cells):
                text = [f"{c.mean:.2f} ± {c.std:.2f}" if c else "–" for c in cells]
                lines.append(f"| {method} | " + " | ".join(text) + " |")
        if dataset in table.val_is_test:
            lines += ["", "**Warning: validation = test on this dataset (paper protocol test leak).**"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def table_summary(table: Table) -> dict[str, Any]:
    """JSON-able form of the table: {dataset: {method: {shots: {mean, std, seeds}}}}."""
    summary: dict[str, Any] = {}
    for (dataset, method, k), cell in sorted(table.cells.items()):
        summary.setdefault(dataset, {}).setdefault(method, {})[str(k)] = {
            "mean": round(cell.mean, 4), "std": round(cell.std, 4), "seeds": cell.seeds}
    return summary


def _cell(values: list[float]) -> Cell:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Cell(mean, std, n)
