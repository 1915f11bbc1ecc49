"""The reduced demo, end to end offline: shapes extracted by the bundled tiny CLIP, the demo's methods benched
with their paper recipes.

It asserts what the full `make demo` promises: zero-shot well above chance, and every few-shot method
better than zero-shot at 16 shots (the habitat of each shapes class is visible only in labelled images).
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from clipbridge.evaluate.commands.main import demo
from clipbridge.evaluate.bench.demo import DEMO_METHODS
from clipbridge.extract.shapes import CLASSES


@pytest.mark.slow
def test_reduced_demo_zero_shot_beats_chance_and_few_shot_beats_zero_shot(tmp_path):
    result = CliRunner().invoke(demo, ["--quick", "--out", str(tmp_path), "--device", "cpu"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    for method in DEMO_METHODS:
        assert f"| {method} |" in result.output
    gap = json.loads((tmp_path / "analysis" / "demo-quick" / "gap.json").read_text())    # the gap table follows
    assert [r["name"] for r in gap["representations"]] == ["raw", "cmm", "semobridge", "semobridge-t"]
    assert result.output.index("| raw |") > result.output.index("| zeroshot |")
    folder = tmp_path / "results" / "demo-quick"
    assert (folder / "accuracy_vs_shots.png").stat().st_size > 10_000
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["protocol"] == "clean" and summary["seeds"] == [1, 2] and summary["recipe"] == "paper"
    assert summary["records"] == len(DEMO_METHODS) * 2 * 2
    table = summary["table"]["shapes"]
    chance = 100 / len(CLASSES)  # the table is in percent
    zero_shot = table["zeroshot"]["16"]["mean"]
    assert table["zeroshot"]["16"]["std"] == 0 and table["tip-adapter"]["16"]["std"] > 0  # seeds differ
    assert zero_shot > 6 * chance, zero_shot
    for method in DEMO_METHODS[1:]:
        assert table[method]["16"]["mean"] > zero_shot + 3, (method, table[method]["16"], zero_shot)
    assert table["gda"]["1"]["mean"] > zero_shot, table["gda"]["1"]      # its 10 crop views: not zero-shot
    # a second run reuses the cache and the records: nothing is refitted
    again = CliRunner().invoke(demo, ["--quick", "--out", str(tmp_path), "--device", "cpu"])
    assert again.exit_code == 0 and "already extracted" in again.output
    assert json.loads((folder / "summary.json").read_text())["table"] == summary["table"]
