"""`demo --quick` runs end to end offline and prints the table and the plot path."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from evaluate.commands import demo


@pytest.mark.slow
def test_quick_demo_benches_every_demo_method_and_writes_table_and_plot(tmp_path):
    result = CliRunner().invoke(demo, ["--quick", "--out", str(tmp_path), "--device", "cpu"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    for method in ("zeroshot", "tip-adapter", "semobridge", "semobridge-t", "cmm"):
        assert f"| {method} |" in result.output
    assert (tmp_path / "results" / "demo" / "accuracy_vs_shots.png").is_file()
    assert f"plot: {tmp_path}" in result.output
