"""bench sweeps (records carry the swept value, resume, never collide) and the accuracy-versus-time plot."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.evaluate.commands.main import bench
from clipbridge.evaluate.reporting.plots import (accuracy_vs_shots_figure, accuracy_vs_time_figure, method_colour,
                                                 sensitivity_figure)
from clipbridge.evaluate.reporting.records import read_records, record_key
from clipbridge.evaluate.bench.sweep import Sweep, sensitivity, sensitivity_curves
from clipbridge.evaluate.reporting.tables import build_table, fit_seconds_per_seed, provenance
from figures import figure_labels

GRID = ["--shots", "1,2", "--seeds", "1-2", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("sweep") / "alpha.h5", classes=5, train_per_class=4, dim=16,
                                 width=12, val=20, test=40, seed=1, dataset="alpha", families={"tip": 3})


def _bench(results, cache, *extra):
    result = CliRunner().invoke(bench, ["--dataset", str(cache), "--results", str(results), *GRID, *extra])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def test_hyper_parameter_sweep_records_state_the_value_resume_and_do_not_collide(tmp_path, cache):
    sweep = ["--methods", "zeroshot,tip-adapter", "--sweep", "tip-adapter.alpha_high=1,10"]
    first = _bench(tmp_path, cache, *sweep)
    records = read_records(tmp_path / "results.jsonl")
    assert len(records) == 2 * 2 * 2 and {r["method"] for r in records} == {"tip-adapter"}   # swept method only
    assert sorted({r["sweep"]["value"] for r in records}) == [1, 10]
    assert all(r["sweep"]["name"] == "tip-adapter.alpha_high" and r["overrides"]["alpha_high"] == r["sweep"]["value"]
               for r in records)
    assert len({record_key(r) for r in records}) == 8                        # two values: two keys per cell
    assert "cells fitted: 4" in first.output
    again = _bench(tmp_path, cache, *sweep)
    assert "cells fitted: 0" in again.output and len(read_records(tmp_path / "results.jsonl")) == 8
    plain = _bench(tmp_path, cache, "--methods", "tip-adapter", "--hparam", "tip-adapter.alpha_high=10")
    assert "cells fitted: 2" in plain.output                                 # not taken for a sweep record
    folder = tmp_path / "alpha-sweep-tip-adapter.alpha_high"
    csv = (folder / "sensitivity.csv").read_text().splitlines()
    assert csv[0].startswith("method,tip-adapter.alpha_high,1-shot mean") and len(csv) == 3
    assert (folder / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 10 |" in (folder / "sensitivity.md").read_text()


def test_prompt_sweep_fits_every_method_on_each_set_combination(tmp_path, cache):
    result = _bench(tmp_path, cache, "--methods", "zeroshot", "--sweep", "prompts=ensemble,cupl,ensemble+cupl",
                    "--name", "prompts")
    records = read_records(tmp_path / "results.jsonl")
    by_value = {r["sweep"]["value"]: r["prompt_sets"] for r in records}
    assert by_value == {"ensemble": ["ensemble"], "cupl": ["cupl"], "ensemble+cupl": ["ensemble", "cupl"]}
    assert "| ensemble+cupl |" in result.output
    assert (tmp_path / "prompts" / "sensitivity.csv").is_file()


def test_another_sweep_of_the_same_name_is_refused_before_it_fits_and_drops_no_table(tmp_path, cache):
    _bench(tmp_path, cache, "--methods", "zeroshot", "--sweep", "prompts=ensemble,cupl", "--name", "shared")
    tables = {path.name: path.read_bytes() for path in (tmp_path / "shared").iterdir()}
    count = len(read_records(tmp_path / "results.jsonl"))
    result = CliRunner().invoke(bench, ["--dataset", str(cache), "--results", str(tmp_path), *GRID, "--methods",
                                        "zeroshot", "--sweep", "prompts=ensemble+cupl", "--name", "shared"])
    assert result.exit_code != 0 and "holds the tables of prompts over ['ensemble', 'cupl']" in str(result.exception)
    assert "another --name" in str(result.exception) and "\n" not in str(result.exception)
    assert len(read_records(tmp_path / "results.jsonl")) == count                     # nothing fitted
    assert {path.name: path.read_bytes() for path in (tmp_path / "shared").iterdir()} == tables
    again = _bench(tmp_path, cache, "--methods", "zeroshot", "--sweep", "prompts=ensemble,cupl", "--name", "shared")
    assert "cells fitted: 0" in again.output                                       # the same sweep: its own folder


@pytest.mark.parametrize("extra, message", [
    (["--sweep", "prompts=ensemble,classname"], "['classname'] not in cache"),
    (["--sweep", "prompts=ensemble", "--prompts", "cupl"], "do not also give --prompts"),
    (["--sweep", "cmm.steps=1,2"], "METHOD one of zeroshot"),
    (["--sweep", "tip-adapter.alpha_high=1,1", "--methods", "tip-adapter"], "lists a value twice"),
    (["--sweep", "tip-adapter.alpha_high=1", "--methods", "tip-adapter", "--hparam", "tip-adapter.alpha_high=2"],
     "both set it"),
])
def test_a_bad_sweep_is_refused_before_any_work(tmp_path, cache, extra, message):
    args = ["--dataset", str(cache), "--results", str(tmp_path), "--methods", "zeroshot", *GRID, *extra]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code != 0 and message in str(result.exception)
    assert not (tmp_path / "results.jsonl").exists()


def test_records_written_before_sweeps_existed_keep_their_key():
    old = {"dataset": "d", "method": "m", "shots": 1, "seed": 1, "overrides": {}}
    assert record_key(old) == record_key({**old, "sweep": None})
    assert record_key(old) != record_key({**old, "sweep": {"name": "prompts", "value": "cupl"}})


RECORDS = [{"dataset": d, "eval_dataset": d, "method": m, "shots": k, "seed": s, "test_accuracy": acc + k + s,
            "fit_seconds": sec * k, "seeds_batched": 2}
           for d in ("a", "b") for m, acc, sec in (("zeroshot", 50.0, 0.01), ("semobridge-t", 60.0, 20.0))
           for k in (1, 4) for s in (1, 2)]


def test_accuracy_vs_time_plots_mean_accuracy_against_seconds_per_seed_in_method_colours():
    seconds = fit_seconds_per_seed(RECORDS)
    assert seconds[("semobridge-t", 4)] == pytest.approx(20.0 * 4 / 2)           # cell seconds / seeds batched
    table = build_table(RECORDS)
    figure = accuracy_vs_time_figure(table, seconds)
    labels = figure_labels(figure)["axes"][0]
    assert labels["xlabel"].startswith("fit seconds per seed, the fit alone") and "mean over datasets" in labels["ylabel"]
    assert labels["legend"] == ["zeroshot", "semobridge-t"]
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    line = next(l for l in ax.get_lines() if l.get_label() == "semobridge-t")
    assert list(line.get_xdata()) == [10.0, 40.0] and list(line.get_ydata()) == [62.5, 65.5]
    shots_figure = accuracy_vs_shots_figure(table)
    for method in ("zeroshot", "semobridge-t"):                              # one colour per method everywhere
        in_time = next(l for l in ax.get_lines() if l.get_label() == method).get_color()
        in_shots = next(c for c in shots_figure.axes[0].containers if c.get_label() == method).lines[0].get_color()
        assert tuple(in_time) == tuple(in_shots) == tuple(method_colour(method))


def test_sensitivity_plot_has_a_panel_per_method_and_a_line_per_shot_count():
    sweep = Sweep("semobridge-t.steps", (100, 1000))
    records = [{**r, "sweep": {"name": sweep.name, "value": v}, "test_accuracy": r["test_accuracy"] + v / 100}
               for r in RECORDS if r["method"] == "semobridge-t" for v in sweep.values]
    table = sensitivity(sweep, records)
    assert table.cells[("semobridge-t", "1000", 4)].mean == pytest.approx(65.5 + 10)
    labels = figure_labels(sensitivity_figure(sweep.name, table.labels, [100.0, 1000.0], sensitivity_curves(table)))
    assert labels["axes"] == [{"title": "semobridge-t", "xlabel": "semobridge-t.steps", "ylabel": "top-1 accuracy (%)",
                               "legend": ["1-shot", "4-shot"]}]


def test_every_result_figure_names_its_model_weights_recipe_protocol_and_seeds():
    records = [{**r, "model": "ViT-B-16", "pretrained": "openai", "recipe": "paper", "protocol": "coop"}
               for r in RECORDS]
    table = build_table(records)
    line = "ViT-B-16/openai · recipe paper · protocol coop · seeds 1-2"
    assert table.provenance == line
    assert figure_labels(accuracy_vs_shots_figure(table))["title"] == line
    assert figure_labels(accuracy_vs_time_figure(table, fit_seconds_per_seed(records)))["title"] == line
    sweep = Sweep("semobridge-t.steps", (100, 1000))
    swept = sensitivity(sweep, [{**r, "sweep": {"name": sweep.name, "value": 100}} for r in records])
    figure = sensitivity_figure(sweep.name, swept.labels, [100.0, 1000.0], sensitivity_curves(swept),
                                subtitle=provenance(records))
    assert figure_labels(figure)["title"] == line
