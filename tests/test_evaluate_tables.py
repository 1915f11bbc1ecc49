"""evaluate.reporting.tables / plots: mean ± std over seeds, per-seed dataset average, deterministic CSV, the PNG."""
from __future__ import annotations

import random

import pytest

from clipbridge.evaluate.reporting.plots import plot_accuracy_vs_shots
from clipbridge.bridge.recipes import order_methods
from clipbridge.evaluate.reporting.tables import AVERAGE, build_table, to_csv, to_markdown


def _r(dataset, method, shots, seed, acc, eval_dataset=None, val_is_test=False):
    return {"dataset": dataset, "eval_dataset": eval_dataset or dataset, "method": method, "shots": shots,
            "seed": seed, "test_accuracy": acc, "val_is_test": val_is_test}


RECORDS = [_r("a", "semobridge", 1, 1, 60.0), _r("a", "semobridge", 1, 2, 62.0),
           _r("b", "semobridge", 1, 1, 80.0), _r("b", "semobridge", 1, 2, 90.0),
           _r("a", "zeroshot", 1, 1, 50.0), _r("a", "zeroshot", 1, 2, 50.0),
           _r("b", "zeroshot", 1, 1, 70.0), _r("b", "zeroshot", 1, 2, 70.0),
           _r("a", "semobridge", 4, 1, 75.0)]


def test_cells_are_mean_and_sample_std_over_seeds():
    table = build_table(RECORDS)
    cell = table.cells[("b", "semobridge", 1)]
    assert (cell.mean, round(cell.std, 4), cell.seeds) == (85.0, 7.0711, 2)
    assert table.cells[("a", "semobridge", 4)].std == 0.0


def test_average_is_taken_seed_by_seed_over_datasets_that_all_have_the_cell():
    table = build_table(RECORDS)
    cell = table.cells[(AVERAGE, "semobridge", 1)]
    assert cell.mean == pytest.approx(73.0) and cell.std == pytest.approx(4.2426, abs=1e-4)  # seeds: 70, 76
    assert (AVERAGE, "semobridge", 4) not in table.cells                     # b has no 4-shot result
    assert table.datasets[-1] == AVERAGE


def test_csv_is_byte_identical_whatever_the_record_order():
    shuffled = RECORDS[:]
    random.Random(0).shuffle(shuffled)
    assert to_csv(build_table(shuffled)) == to_csv(build_table(RECORDS))
    lines = to_csv(build_table(RECORDS)).splitlines()
    assert lines[0].startswith("dataset,method,1-shot mean,1-shot std,1-shot seeds,4-shot mean")
    assert lines[1] == "a,zeroshot,50.00,0.00,2,,,"                         # methods in canonical order


def test_markdown_shows_mean_pm_std_and_flags_val_is_test():
    records = RECORDS + [_r("c", "zeroshot", 1, 1, 40.0, val_is_test=True)]
    text = to_markdown(build_table(records))
    assert "| semobridge | 61.00 ± 1.41 | 75.00 ± 0.00 |" in text
    assert "### c" in text and "validation = test" in text


def test_ood_records_get_their_own_rows_and_stay_out_of_the_average():
    records = RECORDS + [_r("a", "zeroshot", 1, 1, 10.0, eval_dataset="a-sketch"),
                         _r("a", "zeroshot", 1, 2, 12.0, eval_dataset="a-sketch")]
    table = build_table(records)
    assert "a->a-sketch" in table.datasets
    assert table.cells[(AVERAGE, "zeroshot", 1)].mean == 60.0


def test_unknown_methods_follow_the_known_ones_alphabetically():
    assert order_methods(["zz", "semobridge", "aa", "zeroshot"]) == ["zeroshot", "semobridge", "aa", "zz"]


def test_plot_writes_a_png_with_a_panel_per_dataset(tmp_path):
    path = plot_accuracy_vs_shots(build_table(RECORDS), tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _published_records(model="ViT-B-16", pretrained="openai"):
    """semobridge-t and zeroshot on the 11 CoOp datasets, 16 shots, two seeds."""
    from clipbridge.bridge.recipes.common import COOP_DATASETS

    out = []
    for i, dataset in enumerate(COOP_DATASETS):
        for method, acc in (("semobridge-t", 80.0 + i), ("zeroshot", 60.0 + i)):
            for seed in (1, 2):
                out.append({**_r(dataset, method, 16, seed, acc + seed), "model": model, "pretrained": pretrained,
                            "recipe": "paper", "protocol": "paper"})
    return out


def test_published_values_and_differences_sit_beside_ours_where_model_method_dataset_and_shots_match():
    table = build_table(_published_records())
    paper = table.published[("dtd", "semobridge-t", 16)]
    assert paper.accuracy == 73.01 and "semobridge" in paper.source
    assert table.published[("imagenet", "zeroshot", 16)].accuracy == 68.73      # zero-shot: its K = 0 row
    assert table.published[(AVERAGE, "semobridge-t", 16)].accuracy == 82.20     # the 11 datasets: comparable
    csv_lines = to_csv(table).splitlines()
    assert csv_lines[0].endswith("16-shot mean,16-shot std,16-shot seeds,16-shot paper,16-shot diff")
    dtd = next(line for line in csv_lines if line.startswith("dtd,semobridge-t"))
    ours = table.cells[("dtd", "semobridge-t", 16)].mean
    assert dtd == f"dtd,semobridge-t,{ours:.2f},0.71,2,73.01,{ours - 73.01:+.2f}"
    text = to_markdown(table)
    assert f"(paper 73.01, Δ {ours - 73.01:+.2f})" in text and "the authors' protocol" in text
    assert text.startswith("Top-1 accuracy (%) on the test split, mean ± std over seeds 1-2; model "
                           "ViT-B-16/openai; recipe paper; protocol paper.")


def test_no_published_value_for_other_weights_or_an_average_over_other_datasets():
    other = build_table(_published_records(pretrained="laion2b_s34b_b88k"))
    assert not other.published
    subset = build_table([r for r in _published_records() if r["dataset"] in ("dtd", "eurosat")])
    assert ("dtd", "semobridge-t", 16) in subset.published and (AVERAGE, "semobridge-t", 16) not in subset.published
    assert "16-shot paper" not in to_csv(build_table(RECORDS)).splitlines()[0]


def test_records_of_two_models_are_never_averaged_together():
    both = _published_records()[:8] + _published_records(model="RN50")[:8]
    table = build_table(both)
    assert "average (ViT-B-16/openai)" in table.datasets and "average (RN50/openai)" in table.datasets
    assert AVERAGE not in table.datasets and "imagenet (RN50/openai)" in table.datasets


def test_plot_draws_the_published_values(tmp_path):
    from matplotlib import pyplot as plt

    shown = {}
    original = plt.Axes.plot

    def spy(self, *args, **kwargs):
        shown[kwargs.get("label")] = args
        return original(self, *args, **kwargs)

    plt.Axes.plot = spy
    try:
        plot_accuracy_vs_shots(build_table(_published_records()), tmp_path / "p.png")
    finally:
        plt.Axes.plot = original
    assert "zeroshot (paper)" in shown and "semobridge-t (paper)" in shown          # dtd ... ucf101: no mark
    assert list(shown["semobridge-t (paper‡)"]) == [[16], [82.20]]       # the last panel drawn: the average
