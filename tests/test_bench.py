"""`bench` end to end on synthetic caches: outputs, resume, byte-identical tables, OOD scoring, torchrun."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.evaluate.commands.main import bench
from clipbridge.evaluate.reporting.records import VOLATILE_FIELDS, read_records, record_key

REPO = Path(__file__).resolve().parents[1]
GRID = ["--methods", "zeroshot,tip-adapter", "--shots", "1,2", "--seeds", "1-2", "--device", "cpu",
        "--no-progress"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Two source caches (alpha, beta) and a test-only OOD copy of alpha (alpha-shift)."""
    root = tmp_path_factory.mktemp("bench-caches")
    alpha = write_synthetic_cache(root / "alpha.h5", classes=5, train_per_class=4, dim=16, width=12, val=20,
                                  test=40, seed=1, dataset="alpha", families={"tip": 3})
    beta = write_synthetic_cache(root / "beta.h5", classes=4, train_per_class=4, dim=16, width=12, val=16,
                                 test=40, seed=1, dataset="beta", families={"tip": 3})
    shift = root / "alpha-shift.h5"
    shutil.copy(alpha, shift)
    with h5py.File(shift, "a") as handle:
        del handle["images/train"], handle["images/val"], handle["lists/train"], handle["lists/val"]
        handle.attrs["dataset"] = "alpha-shift"
    return {"alpha": alpha, "beta": beta, "shift": shift}


def _bench(results: Path, caches, *extra):
    args = ["--dataset", f"{caches['alpha']},{caches['beta']}", "--results", str(results), "--name", "grid",
            *GRID, *extra]
    result = CliRunner().invoke(bench, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def _stable(records):
    """Records without the fields that vary between runs (times, device, version), sorted by key."""
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE_FIELDS} for r in records), key=record_key)


def test_bench_writes_records_tables_plot_and_summary(tmp_path, caches):
    result = _bench(tmp_path, caches)
    records = read_records(tmp_path / "results.jsonl")
    assert len(records) == 2 * 2 * 2 * 2
    folder = tmp_path / "grid"
    for name in ("table.csv", "table.md", "accuracy_vs_shots.png", "accuracy_vs_time.png", "summary.json"):
        assert (folder / name).is_file()
    csv = (folder / "table.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in csv[1:]] == [[d, m] for d in ("alpha", "beta", "average")
                                                          for m in ("zeroshot", "tip-adapter")]
    assert "### average" in result.output and "| tip-adapter |" in result.output


def test_rerun_skips_everything_and_gives_a_byte_identical_table(tmp_path, caches):
    _bench(tmp_path, caches)
    first = (tmp_path / "grid" / "table.csv").read_bytes()
    again = _bench(tmp_path, caches)
    assert "cells fitted: 0" in again.output
    assert (tmp_path / "grid" / "table.csv").read_bytes() == first
    assert len(read_records(tmp_path / "results.jsonl")) == 16


def test_interrupted_bench_resumes_only_missing_cells_with_identical_tables(tmp_path, caches):
    _bench(tmp_path / "full", caches)
    complete = (tmp_path / "full" / "grid" / "table.csv").read_bytes()
    results = tmp_path / "partial" / "results.jsonl"
    results.parent.mkdir()
    lines = (tmp_path / "full" / "results.jsonl").read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:9]) + lines[9][:25])                 # killed mid-record
    with pytest.warns(UserWarning, match="malformed"):
        resumed = _bench(tmp_path / "partial", caches)
    assert "cells fitted: 4" in resumed.output                              # cells 5-8 of 8 (cell 5 was partial)
    assert (tmp_path / "partial" / "grid" / "table.csv").read_bytes() == complete
    with pytest.warns(UserWarning):
        assert _stable(read_records(results)) == _stable(read_records(tmp_path / "full" / "results.jsonl"))


def test_ood_caches_are_scored_with_the_source_fit_and_labelled(tmp_path, caches):
    args = ["--dataset", str(caches["alpha"]), "--ood", str(caches["shift"]), "--results", str(tmp_path),
            "--name", "ood", *GRID]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    records = read_records(tmp_path / "results.jsonl")
    shifted = [r for r in records if r["eval_dataset"] == "alpha-shift"]
    source = {(r["method"], r["shots"], r["seed"]): r for r in records if r["eval_dataset"] == "alpha"}
    assert len(shifted) == len(source) == 8
    for r in shifted:                       # same fit, and (a copy of alpha's test) the same accuracy
        twin = source[(r["method"], r["shots"], r["seed"])]
        assert r["dataset"] == "alpha" and r["hparams"] == twin["hparams"]
        assert r["test_accuracy"] == pytest.approx(twin["test_accuracy"])
    assert "alpha->alpha-shift" in (tmp_path / "ood" / "table.csv").read_text()


@pytest.mark.slow
def test_torchrun_two_cpu_processes_write_the_same_records_as_one(tmp_path, caches):
    _bench(tmp_path / "single", caches)
    runner = tmp_path / "bench_entry.py"
    runner.write_text("import sys\nsys.path.insert(0, %r)\nfrom clipbridge.evaluate.commands.main import bench\n"
                      "bench.main(standalone_mode=True)\n" % str(REPO))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(runner), "--dataset", f"{caches['alpha']},{caches['beta']}",
               "--results", str(tmp_path / "multi"), "--name", "grid", *GRID]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    multi = read_records(tmp_path / "multi" / "results.jsonl")
    assert _stable(multi) == _stable(read_records(tmp_path / "single" / "results.jsonl"))
    assert (tmp_path / "multi" / "grid" / "table.csv").read_bytes() == \
        (tmp_path / "single" / "grid" / "table.csv").read_bytes()


@pytest.mark.slow
def test_speed_script_prints_records_per_second_for_the_grid(capsys):
    from clipbridge.evaluate.bench.speed import main

    main(["--methods", "zeroshot", "--classes", "4", "--dim", "8", "--width", "8", "--shots", "1,2",
          "--seeds", "1-2"])
    out = capsys.readouterr().out
    assert "methods (1 registered/selected): zeroshot" in out
    assert "4 records in" in out and "records/s" in out


class _Named:
    def __init__(self, names, original=None, model="m", path="x.h5"):
        self.classnames, self.original_classnames = names, original or names
        self.attrs, self.path = {"model": model, "pretrained": "p"}, path


def test_ood_classes_align_to_the_source_by_name_for_a_subset_in_any_order():
    from clipbridge.evaluate.fitting.scoring import align_classes

    source = _Named(["tench", "goldfish", "great white shark"], ["n01", "n02", "n03"])
    subset = _Named(["great white shark", "tench"], ["n03", "n01"])
    assert align_classes(source, subset).tolist() == [2, 0]
    renamed = _Named(["Great_White Shark"], ["other"])
    assert align_classes(source, renamed).tolist() == [2]


def test_ood_alignment_rejects_unknown_classes_and_other_models():
    from clipbridge.errors import ClipBridgeError
    from clipbridge.evaluate.fitting.scoring import align_classes

    source = _Named(["tench", "goldfish"])
    with pytest.raises(ClipBridgeError, match="'axolotl' of y.h5 is not a class"):
        align_classes(source, _Named(["axolotl"], path="y.h5"))
    with pytest.raises(ClipBridgeError, match="model"):
        align_classes(source, _Named(["tench"], model="other"))


@pytest.mark.parametrize("extra,message", [
    (["--shots", "1,5"], "--shots 5 is out of range"),                        # beta has 4 images per class
    (["--hparam", "tip-adapter.grid_alpha=0"], "tip-adapter: grid_alpha must be >= 1"),
    (["--methods", "zeroshot,gda", "--recipe", "uniform", "--view-family", "plain,flip"], "no view family 'flip'"),
])
def test_bench_checks_the_whole_grid_before_fitting_anything(tmp_path, caches, extra, message):
    args = ["--dataset", f"{caches['alpha']},{caches['beta']}", "--results", str(tmp_path), "--name", "grid",
            *GRID]
    for option, value in zip(extra[::2], extra[1::2]):            # the extra options replace GRID's
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    result = CliRunner().invoke(bench, args)
    assert isinstance(result.exception, (ClipBridgeError, BridgeInputError)), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "results.jsonl").exists()
