"""Issue 20 item 7: evaluating a run twice leaves one record per result; benches of one --name merge their
tables (at once, in two real processes, or one after the other) or are refused in one line, never dropped."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import clipbridge as cb
import clipbridge.cli as cli
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.bench.grid_folder import GRID_KEYS
from clipbridge.evaluate.commands.main import bench
from clipbridge.evaluate.reporting.records import append_new_records, make_record, read_records

GRID = ["--shots", "1", "--seeds", "1-2", "--device", "cpu", "--no-progress", "--name", "shared"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("records-cache")
    return write_synthetic_cache(root / "syn.h5", classes=4, train_per_class=3, dim=8, width=6, val=8, test=12,
                                 dataset="syn", families={"tip": 2})


def _record(test_accuracy=50.0, **changes):
    fields = dict(dataset="syn", model="m", pretrained="w", method="zeroshot", hparams={}, shots=1, seed=1, views=1,
                  view_families=["plain"], prompt_sets=["coop"], protocol="clean", val_accuracy=40.0,
                  test_accuracy=test_accuracy, fit_seconds=0.1, search_seconds=0.0, device="cpu", cache_id="c",
                  val_is_test=False)
    fields.update(changes)
    return make_record(**fields)


def test_append_new_records_skips_a_result_already_held_and_appends_a_changed_one(tmp_path):
    path = tmp_path / "results.jsonl"
    assert append_new_records(path, [_record()]) == (1, 0)
    assert append_new_records(path, [_record(fit_seconds=9.0, device="cuda")]) == (0, 1)   # volatile fields only
    assert append_new_records(path, [_record(test_accuracy=51.0)]) == (1, 0)
    assert [r["test_accuracy"] for r in read_records(path)] == [50.0, 51.0]


def test_evaluating_a_run_twice_leaves_one_record_per_seed(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = cb.fit(cb.open_cache(cache), method="tip-adapter", shots=1, seeds=[1, 2])
    folder = run.save(tmp_path / "runs")
    for _ in range(2):
        assert cli.main(["evaluate", str(folder), "--results", "results", "--threads", "1"]) == 0
    assert "2 already there with the same result, not repeated" in capsys.readouterr().out
    records = read_records(tmp_path / "results" / "results.jsonl")
    assert sorted(r["seed"] for r in records) == [1, 2]


def _bench(results: Path, cache: Path, methods: str, *extra: str):
    return CliRunner().invoke(bench, ["--cache", str(cache), "--results", str(results), "--methods", methods,
                                      *GRID, *extra])


def _table_methods(folder: Path) -> set[str]:
    return {line.split(",")[1] for line in (folder / "table.csv").read_text().splitlines()[1:]}


def test_a_second_bench_of_the_same_name_merges_its_grid_with_the_first(cache, tmp_path):
    assert _bench(tmp_path, cache, "zeroshot").exit_code == 0
    assert _bench(tmp_path, cache, "tip-adapter").exit_code == 0
    assert _table_methods(tmp_path / "shared") == {"zeroshot", "tip-adapter"}
    summary = json.loads((tmp_path / "shared" / "summary.json").read_text())
    assert summary["methods"] == ["zeroshot", "tip-adapter"] and summary["records"] == 4
    assert len(json.loads((tmp_path / "shared" / GRID_KEYS).read_text())["keys"]) == 4


def test_a_bench_that_would_put_two_results_in_one_cell_is_refused_before_fitting(cache, tmp_path):
    assert _bench(tmp_path, cache, "tip-adapter").exit_code == 0
    before = len(read_records(tmp_path / "results.jsonl"))
    result = _bench(tmp_path, cache, "tip-adapter", "--hparam", "tip-adapter.search_rounds=2")
    assert isinstance(result.exception, ClipBridgeError)
    assert "already tables tip-adapter 1-shot seed 1 on syn with another overrides" in str(result.exception)
    assert len(read_records(tmp_path / "results.jsonl")) == before            # refused before any fit
    other = _bench(tmp_path, cache, "tip-adapter", "--protocol", "paper")
    assert "holds the tables of a bench with protocol 'clean'" in str(other.exception)


def test_two_bench_processes_of_one_name_at_once_keep_both_grids(cache, tmp_path):
    entry = tmp_path / "bench_entry.py"
    entry.write_text("from clipbridge.evaluate.commands.main import bench\nbench.main(standalone_mode=True)\n")
    env = {**os.environ, "CLIPBRIDGE_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, str(entry), "--cache", str(cache), "--results", str(tmp_path),
                                   "--methods", methods, *GRID], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for methods in ("zeroshot,gda", "tip-adapter,linear-probe")]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    assert _table_methods(tmp_path / "shared") == {"zeroshot", "gda", "tip-adapter", "linear-probe"}
    assert len(read_records(tmp_path / "results.jsonl")) == 8
    assert not [p.name for p in (tmp_path / "shared").iterdir() if p.name.startswith(".")]   # no temporaries left
