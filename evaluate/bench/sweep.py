"""Bench sweeps (SeMoBridge's Fig. 6): the same grid at each value of one hyper-parameter or prompt choice.

    bench --sweep semobridge-t.steps=500,1000,5000        one method's hyper-parameter; only that method is
                                                          fitted (the others do not depend on it)
    bench --sweep prompts=coop,ensemble,cupl,ensemble+cupl   the cache's text sets ('+' joins sets); every
                                                          method of --methods is fitted at every value

Each value is one bench (evaluate.bench.grid.run_bench) whose records carry `sweep` = {"name", "value"}, a
field of the record key (evaluate.reporting.records.KEY_FIELDS): an interrupted sweep resumes like any bench, and
the records of two values (or of a plain bench) never collide. Then <results>/<name>/ receives
sensitivity.csv and sensitivity.md (test accuracy, mean ± std over seeds, per method × value × shots;
with several datasets their seed-by-seed average, as evaluate.reporting.tables' average row), sensitivity.png
(accuracy against the value, one panel per method, one line per shot count) and summary.json.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.bench.grid import BenchSpec, run_bench
from clipbridge.evaluate.reporting.files import folder_lock, write_text_atomic
from clipbridge.evaluate.reporting.records import latest_by_key, package_version, read_records, results_path
from clipbridge.bridge.recipes import order_methods
from clipbridge.evaluate.reporting.tables import AVERAGE, Cell, build_table, provenance

PROMPTS = "prompts"
SENSITIVITY_CSV, SENSITIVITY_MD, SENSITIVITY_PNG, SUMMARY_JSON = (
    "sensitivity.csv", "sensitivity.md", "sensitivity.png", "summary.json")
#: what a sweep's folder holds the sweep of (claimed before any fit, under the folder's lock)
SWEEP_CLAIM = "sweep.json"


@dataclass(frozen=True)
class Sweep:
    """One swept quantity: `name` is "prompts" or "METHOD.KEY"; `values` in sweep order (JSON values;
    a prompt value is a string of set names joined by '+')."""

    name: str
    values: tuple[Any, ...]

    @property
    def method(self) -> str | None:
        """The method whose hyper-parameter is swept (None for prompts)."""
        return None if self.name == PROMPTS else self.name.partition(".")[0]

    def label(self, value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    def point(self, spec: BenchSpec, value: Any) -> BenchSpec:
        """The bench of one value: prompt sets or the method's hyper-parameter set, `sweep` recorded."""
        marker = {"name": self.name, "value": value}
        if self.method is None:
            return replace(spec, prompt_sets=tuple(value.split("+")), sweep=marker)
        key = self.name.partition(".")[2]
        hparams = {**spec.hparams, self.method: {**spec.hparams.get(self.method, {}), key: value}}
        return replace(spec, methods=(self.method,), hparams=hparams, sweep=marker)


def parse_sweep(text: str, methods: Sequence[str]) -> Sweep:
    """'METHOD.KEY=v1,v2' (values parsed as JSON where they are JSON) or 'prompts=a,b,a+b' -> Sweep; the
    method must be one of `methods` and know KEY. A ClipBridgeError says what is wrong."""
    from clipbridge.bridge.registry import check_hparams, get_method
    from clipbridge.cache.options import parse_hparams

    name, sep, listed = text.partition("=")
    name = name.strip()
    raw = [v.strip() for v in listed.split(",")]
    if not sep or not name or not all(raw):
        raise ClipBridgeError(f"--sweep {text!r} must look like METHOD.KEY=V1,V2,... or prompts=SET,SET+SET,...")
    if len(set(raw)) != len(raw):
        raise ClipBridgeError(f"--sweep {text!r} lists a value twice")
    if name == PROMPTS:
        if any(not part.strip() for value in raw for part in value.split("+")):
            raise ClipBridgeError(f"--sweep {text!r}: an empty prompt set name")
        return Sweep(PROMPTS, tuple("+".join(p.strip() for p in value.split("+")) for value in raw))
    method, dot, key = name.partition(".")
    if not dot or not key or method not in methods:
        raise ClipBridgeError(f"--sweep {text!r}: sweep 'prompts' or METHOD.KEY with METHOD one of "
                              f"{', '.join(methods)} (the methods of this bench)")
    values = tuple(parse_hparams([f"{key}={value}"])[key] for value in raw)
    for value in values:                     # each value checked for type and range before any work
        check_hparams(get_method(method), {key: value})
    return Sweep(name, values)


def check_sweep(sweep: Sweep, spec: BenchSpec, caches: Sequence[Any]) -> None:
    """Refuse, before any work, a sweep that contradicts the bench's options or asks for absent text sets."""
    if sweep.method is None:
        if spec.prompt_sets:
            raise ClipBridgeError("--sweep prompts=... chooses the prompt sets; do not also give --prompts")
        for cache in caches:
            for value in sweep.values:
                missing = [s for s in value.split("+") if s not in cache.text_sets]
                if missing:
                    raise ClipBridgeError(f"--sweep prompts: set(s) {missing} not in cache {cache.path}; it has "
                                          f"{', '.join(cache.text_sets)}")
    elif sweep.name.partition(".")[2] in spec.hparams.get(sweep.method, {}):
        raise ClipBridgeError(f"--sweep {sweep.name} and --hparam {sweep.name}=... both set it; keep one")


@dataclass
class SweepOutcome:
    fitted_cells: int = 0
    skipped_cells: int = 0
    records_written: int = 0
    outputs: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""


def run_sweep(spec: BenchSpec, sweep: Sweep, results_dir: str | os.PathLike, name: str, *, progress: bool = True,
              echo: Callable[[str], None] = print) -> SweepOutcome:
    """One bench per value (records only), then (rank 0) the sensitivity table, plot and summary."""
    from clipbridge.cache.reader import open_cache

    check_sweep(sweep, spec, [open_cache(p, model=spec.model, pretrained=spec.pretrained) for p in spec.caches])
    if int(os.environ.get("RANK", "0")) == 0:
        claim_sweep_folder(Path(results_dir) / name, sweep, spec)
    outcome = SweepOutcome()
    wanted: set[str] = set()
    for value in sweep.values:
        echo(f"sweep {sweep.name} = {sweep.label(value)}")
        done = run_bench(sweep.point(spec, value), results_dir, name, progress=progress, echo=echo, write=False)
        outcome.fitted_cells += done.fitted_cells
        outcome.skipped_cells += done.skipped_cells
        outcome.records_written += done.records_written
        wanted |= done.keys
    if int(os.environ.get("RANK", "0")) == 0:
        latest = latest_by_key(read_records(results_path(results_dir)))
        records = [record for key, record in latest.items() if key in wanted]
        if len(records) < len(wanted):
            echo(f"warning: {len(wanted) - len(records)} of {len(wanted)} results of the sweep are missing")
        write_sweep_outputs(Path(results_dir) / name, sweep, records, spec, outcome)
    return outcome


def sweep_identity(sweep: Sweep, spec: BenchSpec) -> dict[str, Any]:
    """What a sweep's tables show (JSON-able): the swept quantity, its values and the grid around it."""
    return {"sweep": sweep.name, "values": list(sweep.values), "methods": list(spec.methods),
            "shots": list(spec.shots), "seeds": list(spec.seeds), "caches": [str(Path(c).resolve()) for c in spec.caches],
            "protocol": spec.protocol, "recipe": spec.recipe}


def claim_sweep_folder(folder: Path, sweep: Sweep, spec: BenchSpec) -> None:
    """Record in `folder` (under its lock) which sweep its tables belong to; a folder already holding another
    sweep's tables is refused in one line before any fit, so two sweeps of one --name never overwrite each other
    (the same sweep again, or at once from two processes, rewrites the same tables from the same records)."""
    identity = sweep_identity(sweep, spec)
    with folder_lock(folder):
        claim = folder / SWEEP_CLAIM
        if claim.is_file():
            try:
                held = json.loads(claim.read_text())
            except ValueError:
                held = None
            if held != identity:
                shown = f"{held.get('sweep')} over {held.get('values')}" if isinstance(held, dict) else "another sweep"
                raise ClipBridgeError(f"{folder} holds the tables of {shown} (another grid or values); give this "
                                      f"sweep another --name, or remove {folder}")
        else:
            write_text_atomic(claim, json.dumps(identity, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Sensitivity:
    """cells[(method, value label, shots)] = Cell over seeds (dataset-averaged when there are several)."""

    name: str
    labels: list[str]
    methods: list[str]
    shots: list[int]
    cells: dict[tuple[str, str, int], Cell]


def sensitivity(sweep: Sweep, records: Sequence[dict[str, Any]]) -> Sensitivity:
    """Aggregate a sweep's in-distribution records: per value, evaluate.reporting.tables.build_table's average row (one
    dataset: its row); OOD scores stay in results.jsonl."""
    labels = [sweep.label(v) for v in sweep.values]
    cells: dict[tuple[str, str, int], Cell] = {}
    methods: set[str] = set()
    shots: set[int] = set()
    for value, label in zip(sweep.values, labels):
        table = build_table([r for r in records if (r.get("sweep") or {}).get("value") == value
                             and r.get("eval_dataset", r["dataset"]) == r["dataset"]])
        row = AVERAGE if AVERAGE in table.datasets else next(iter(table.datasets), None)
        for (dataset, method, k), cell in table.cells.items():
            if dataset == row:
                cells[(method, label, k)] = cell
                methods.add(method)
                shots.add(k)
    return Sensitivity(sweep.name, labels, order_methods(methods), sorted(shots), cells)


def to_csv(table: Sensitivity) -> str:
    """method, <swept name>, then `<K>-shot mean`, `<K>-shot std`, `<K>-shot seeds` per shot count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["method", table.name]
    for k in table.shots:
        header += [f"{k}-shot mean", f"{k}-shot std", f"{k}-shot seeds"]
    writer.writerow(header)
    for method in table.methods:
        for label in table.labels:
            cells = [table.cells.get((method, label, k)) for k in table.shots]
            if any(cells):
                row = [method, label]
                for cell in cells:
                    row += [f"{cell.mean:.2f}", f"{cell.std:.2f}", str(cell.seeds)] if cell else ["", "", ""]
                writer.writerow(row)
    return out.getvalue()


def to_markdown(table: Sensitivity, datasets: Sequence[str]) -> str:
    """One Markdown table per method: rows = swept values, columns = shots, `mean ± std`."""
    where = datasets[0] if len(datasets) == 1 else f"mean over {', '.join(datasets)} (seed by seed)"
    blocks = [f"Sensitivity to {table.name}: top-1 test accuracy (%), mean ± std over seeds, {where}."]
    for method in table.methods:
        lines = [f"### {method}", "", f"| {table.name} | " + " | ".join(f"{k}-shot" for k in table.shots) + " |",
                 "|---|" + "---|" * len(table.shots)]
        for label in table.labels:
            cells = [table.cells.get((method, label, k)) for k in table.shots]
            if any(cells):
                lines.append(f"| {label} | " + " | ".join(f"{c.mean:.2f} ± {c.std:.2f}" if c else "–"
                                                          for c in cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def sensitivity_curves(table: Sensitivity) -> dict[str, dict[int, list[tuple[int, float, float]]]]:
    """{method: {shots: [(value index, mean, std)]}} for evaluate.reporting.plots.sensitivity_figure."""
    curves: dict[str, dict[int, list[tuple[int, float, float]]]] = {}
    for method in table.methods:
        for k in table.shots:
            points = [(i, cell.mean, cell.std) for i, label in enumerate(table.labels)
                      if (cell := table.cells.get((method, label, k)))]
            if points:
                curves.setdefault(method, {})[k] = points
    return curves


def value_positions(values: Sequence[Any]) -> tuple[list[float] | None, bool]:
    """(numeric x positions or None for a categorical axis, whether a log axis suits them: all positive and
    spanning a factor of 20 or more)."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None, False
    positions = [float(v) for v in values]
    return positions, min(positions) > 0 and max(positions) >= 20 * min(positions)


def write_sweep_outputs(folder: Path, sweep: Sweep, records: list[dict[str, Any]], spec: BenchSpec,
                        outcome: SweepOutcome) -> None:
    """sensitivity.csv, sensitivity.md, sensitivity.png and summary.json of the sweep's records (under the
    folder's lock: two writers take turns)."""
    with folder_lock(folder):
        _write_sweep_outputs(folder, sweep, records, spec, outcome)


def _write_sweep_outputs(folder: Path, sweep: Sweep, records: list[dict[str, Any]], spec: BenchSpec,
                         outcome: SweepOutcome) -> None:
    from clipbridge.evaluate.reporting.plots import save_figure, sensitivity_figure

    table = sensitivity(sweep, records)
    datasets = sorted({r["dataset"] for r in records}) or [Path(c).stem for c in spec.caches]
    markdown = to_markdown(table, datasets)
    write_text_atomic(folder / SENSITIVITY_CSV, to_csv(table))
    write_text_atomic(folder / SENSITIVITY_MD, markdown)
    positions, log_x = value_positions(sweep.values)
    plot = save_figure(sensitivity_figure(sweep.name, table.labels, positions, sensitivity_curves(table), log_x,
                                          subtitle=provenance(records)), folder / SENSITIVITY_PNG)
    summary = {"sweep": sweep.name, "values": list(sweep.values), "datasets": datasets, "methods": table.methods,
               "shots": list(spec.shots), "seeds": list(spec.seeds), "protocol": spec.protocol,
               "records": len(records), "package_version": package_version(),
               "table": {method: {label: {str(k): {"mean": round(c.mean, 4), "std": round(c.std, 4),
                                                   "seeds": c.seeds}
                                          for k in table.shots if (c := table.cells.get((method, label, k)))}
                                  for label in table.labels} for method in table.methods}}
    write_text_atomic(folder / SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    outcome.outputs = {"csv": folder / SENSITIVITY_CSV, "markdown": folder / SENSITIVITY_MD, "plot": plot,
                       "summary": folder / SUMMARY_JSON}
    outcome.markdown = markdown
