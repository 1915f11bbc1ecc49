"""Issue 20 item 8: plots a reader can read. One colour and one marker per method in every plot (SeMoBridge and
SeMoBridge-T differ), error bars moved apart, the time plot timing the fit alone, classes named after colours
drawn in those colours."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from clipbridge.bridge.recipes import METHOD_NAMES
from clipbridge.evaluate.analysis.plots import class_styles, colour_word, embedding_map_figure
from clipbridge.evaluate.analysis.representations import RAW, Representation
from clipbridge.evaluate.reporting.plots import (METHOD_STYLES, accuracy_vs_shots_figure, accuracy_vs_time_figure,
                                                 method_style)
from clipbridge.evaluate.reporting.tables import build_table, fit_seconds_per_seed

RECORDS = [{"dataset": "d", "eval_dataset": "d", "method": m, "shots": k, "seed": s, "test_accuracy": 60.0 + k + s,
            "fit_seconds": 0.5 * k} for m in ("zeroshot", "semobridge", "semobridge-t") for k in (1, 4) for s in (1, 2)]


def test_every_method_has_its_own_colour_and_marker():
    styles = [method_style(m) for m in METHOD_NAMES]
    assert set(METHOD_NAMES) <= set(METHOD_STYLES)
    assert len({colour for colour, _ in styles}) == len({marker for _, marker in styles}) == len(METHOD_NAMES)
    assert method_style("semobridge") != method_style("semobridge-t")
    assert method_style("my-method") == method_style("my-method")          # an unknown method: fixed too


def test_accuracy_vs_shots_draws_each_method_in_its_style_with_its_bars_moved_apart():
    ax = accuracy_vs_shots_figure(build_table(RECORDS)).axes[0]
    containers = {c.get_label(): c for c in ax.containers}
    xs = {}
    for method in ("semobridge", "semobridge-t"):
        line = containers[method].lines[0]
        colour, marker = method_style(method)
        assert tuple(line.get_color()) == colour and line.get_marker() == marker
        xs[method] = list(line.get_xdata())
    assert all(a != b for a, b in zip(xs["semobridge"], xs["semobridge-t"]))          # bars do not overlap
    assert all(abs(x / k - 1) < 0.1 for method in xs for x, k in zip(xs[method], (1, 4)))   # near their shots


def test_accuracy_vs_time_uses_the_method_markers_and_says_it_times_the_fit_alone():
    table = build_table(RECORDS)
    ax = accuracy_vs_time_figure(table, fit_seconds_per_seed(RECORDS)).axes[0]
    assert "the fit alone" in ax.get_xlabel() and "no model loading" in ax.get_xlabel()
    for method in ("semobridge", "semobridge-t"):
        line = next(line for line in ax.get_lines() if line.get_label() == method)
        assert (tuple(line.get_color()), line.get_marker()) == method_style(method)
    assert sorted({t.get_text() for t in ax.texts}) == ["1", "4"]                    # shots beside the points


def test_the_bench_warm_up_does_torchs_first_use_set_up_before_any_fit_is_timed():
    code = ("import sys, torch\nfrom clipbridge.evaluate.bench.grid import warm_up\n"
            "assert 'torch._dynamo' not in sys.modules\nwarm_up('cpu')\nprint('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-1000:]


@pytest.mark.parametrize("name, word", [("red", "red"), ("Blue square", "blue"), ("dotted red circle", "red"),
                                        ("Bluebell", None), ("dog", None)])
def test_colour_words_are_whole_words(name, word):
    assert colour_word(name) == word


def test_classes_named_after_colours_are_drawn_in_them_and_no_other_class_takes_their_colour():
    names = ["red", "blue square", "dog", "red circle", "cat", "green"]
    styles = class_styles(names)
    assert styles[0][0] == styles[3][0] == "#d62728" and styles[0][1] != styles[3][1]   # two reds: two markers
    assert styles[1][0] == "#1f77b4" and styles[5][0] == "#2ca02c"
    said = {styles[i][0] for i in (0, 1, 5)}
    assert styles[2][0] not in said and styles[4][0] not in said and styles[2] != styles[4]


def test_the_embedding_map_draws_each_class_in_its_style():
    torch.manual_seed(0)
    classnames = ["red", "blue", "dog"]
    labels = torch.arange(3).repeat_interleave(5)
    images = torch.nn.functional.normalize(torch.randn(15, 6) + 3 * torch.eye(6)[labels], dim=-1)
    figure = embedding_map_figure([Representation(RAW, "x", images, images)], torch.eye(6)[:3], labels, classnames, classes=3)
    legend = {t.get_text(): h for t, h in zip(figure.legends[0].get_texts(), figure.legends[0].legend_handles)}
    from matplotlib.colors import to_hex

    for name, (colour, marker) in zip(classnames, class_styles(classnames)):
        assert to_hex(legend[name].get_color()) == colour and legend[name].get_marker() == marker
    drawn = [to_hex(c.get_facecolor()[0]) for c in figure.axes[0].collections[:3]]
    assert drawn == [colour for colour, _ in class_styles(classnames)]
