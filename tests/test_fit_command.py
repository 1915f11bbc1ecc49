"""`fit` and `evaluate` end to end on synthetic caches: report, saved run, records, protocols, errors."""
from __future__ import annotations

import re
import shutil

import h5py
import pytest
from click.testing import CliRunner

from cache_factory import write_cache
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.registry import get_method
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.reader import Cache
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.cache.options import parse_hparams, parse_int_list
from clipbridge.evaluate.commands.main import evaluate, fit
from clipbridge.evaluate.reporting.records import read_records
from clipbridge.evaluate.fitting.runs import format_seeds, load_run


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """(with val, a copy without val, another extraction) — small synthetic caches."""
    root = tmp_path_factory.mktemp("caches")
    plain = write_synthetic_cache(root / "syn.h5", classes=6, train_per_class=8, dim=16, width=12, val=24,
                                  test=60, families={"flip": 1, "tip": 3}, seed=1)
    noval = root / "noval.h5"
    shutil.copy(plain, noval)
    with h5py.File(noval, "a") as handle:
        del handle["images/val"], handle["lists/val"]
    other = write_synthetic_cache(root / "other.h5", classes=6, train_per_class=8, dim=16, width=12, val=24,
                                  test=60, families={"tip": 3}, seed=2)
    return {"plain": plain, "noval": noval, "other": other}


def _invoke(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, (SystemExit, ClipBridgeError, BridgeInputError)):
        raise result.exception
    return result


def _fit(tmp_path, cache, *extra):
    return _invoke(fit, ["--cache", cache, "--runs", tmp_path / "runs", "--results", tmp_path / "results",
                         "--device", "cpu", *extra])


def test_fit_prints_per_seed_accuracy_saves_the_run_and_appends_one_record_per_seed(tmp_path, caches):
    result = _fit(tmp_path, caches["plain"], "--method", "tip-adapter", "--shots", "4", "--seeds", "1-3")
    assert result.exit_code == 0, result.output
    assert "mean  val" in result.output and "run saved:" in result.output
    records = read_records(tmp_path / "results" / "results.jsonl")
    assert [r["seed"] for r in records] == [1, 2, 3]
    assert {r["method"] for r in records} == {"tip-adapter"} and all(r["shots"] == 4 for r in records)
    run_dir = next((tmp_path / "runs" / "synthetic" / "tip-adapter").iterdir())
    assert run_dir.name.startswith("shots4-seeds1-3-")
    state, meta, _ = load_run(run_dir)
    assert state.method == "tip-adapter" and meta["seeds"] == [1, 2, 3] and meta["protocol"] == "clean"
    assert sum(f.stat().st_size for f in run_dir.iterdir()) < 200_000          # no cache copy


def test_evaluate_reproduces_the_fit_test_accuracy_and_appends_records(tmp_path, caches):
    _fit(tmp_path, caches["plain"], "--method", "tip-adapter", "--shots", "2", "--seeds", "1,2")
    fitted = read_records(tmp_path / "results" / "results.jsonl")
    run_dir = next((tmp_path / "runs" / "synthetic" / "tip-adapter").iterdir())
    result = _invoke(evaluate, [run_dir, "--results", tmp_path / "again", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    evaluated = read_records(tmp_path / "again" / "results.jsonl")
    assert [r["test_accuracy"] for r in evaluated] == [r["test_accuracy"] for r in fitted]
    assert [r["val_accuracy"] for r in evaluated] == [r["val_accuracy"] for r in fitted]
    result = _invoke(evaluate, [run_dir, "--results", tmp_path / "results", "--device", "cpu"])
    assert result.exit_code == 0 and "2 already there with the same result" in result.output
    assert len(read_records(tmp_path / "results" / "results.jsonl")) == 2      # the same results, not repeated


def test_evaluate_refuses_a_cache_other_than_the_one_fitted_on(tmp_path, caches):
    _fit(tmp_path, caches["plain"], "--method", "zeroshot", "--shots", "1")
    run_dir = next((tmp_path / "runs" / "synthetic" / "zeroshot").iterdir())
    result = _invoke(evaluate, [run_dir, "--cache", caches["other"], "--results", tmp_path / "results"])
    assert isinstance(result.exception, ClipBridgeError) and "is not the cache" in str(result.exception)


def test_clean_protocol_reads_the_test_split_only_after_fitting(tmp_path, caches, monkeypatch):
    events = []
    method = get_method("tip-adapter")
    original_fit = method.fit

    def fit_spy(task, **hparams):
        events.append("fit")
        return original_fit(task, **hparams)

    def spy(reader):
        def read(self, name, *args, **kwargs):
            if name == "test" and "fit" not in events:
                raise AssertionError("test split read before fitting")
            events.append(f"read {name}")
            return reader(self, name, *args, **kwargs)
        return read

    monkeypatch.setattr(method, "fit", fit_spy)
    for reader in ("plain", "views", "rows"):
        monkeypatch.setattr(Cache, reader, spy(getattr(Cache, reader)))
    for cache in ("plain", "noval"):
        events.clear()
        result = _fit(tmp_path, caches[cache], "--method", "tip-adapter", "--shots", "2", "--seeds", "1-2")
        assert result.exit_code == 0, result.output
        assert events.index("read test") > events.index("fit")


def test_paper_protocol_on_a_cache_without_val_flags_val_is_test(tmp_path, caches):
    result = _fit(tmp_path, caches["noval"], "--method", "zeroshot", "--shots", "1", "--protocol", "paper")
    assert result.exit_code == 0
    assert "VAL = TEST" in result.output and "[val = test]" in result.output
    records = read_records(tmp_path / "results" / "results.jsonl")
    assert records[0]["val_is_test"] is True and records[0]["protocol"] == "paper"
    # zeroshot scores val and test alike, and val is the test set here
    assert records[0]["val_accuracy"] == pytest.approx(records[0]["test_accuracy"], abs=1e-4)


def test_clean_protocol_on_a_cache_without_val_is_not_flagged(tmp_path, caches):
    result = _fit(tmp_path, caches["noval"], "--method", "zeroshot", "--shots", "1")
    assert result.exit_code == 0 and "VAL = TEST" not in result.output
    assert read_records(tmp_path / "results" / "results.jsonl")[0]["val_is_test"] is False


def test_shots_above_a_small_class_prints_a_note_and_fits_with_what_it_has(tmp_path, caches):
    short = write_cache(tmp_path / "short.h5", train_counts=(2, 8, 8))     # class 0 has 2 train images
    result = _fit(tmp_path, short, "--method", "zeroshot", "--shots", "4")
    assert result.exit_code == 0, result.output
    assert "note: 1 class(es) have fewer than 4 train images; CoOp keeps all they have: c0 (2)" in result.output


@pytest.mark.parametrize("shots", ["0", "9"])
def test_shots_out_of_range_is_a_one_line_error(tmp_path, caches, shots):
    result = _fit(tmp_path, caches["plain"], "--method", "zeroshot", "--shots", shots)
    assert isinstance(result.exception, ClipBridgeError)
    assert "out of range" in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "runs").exists()


def test_fit_option_errors_are_clear(tmp_path, caches):
    both = _invoke(fit, ["--cache", caches["plain"], "--dataset", "x"])
    assert "give --dataset NAME or --cache PATH, not both" in str(both.exception)
    missing = _invoke(fit, ["--dataset", "nosuch", "--cache-root", tmp_path])
    assert "no cache for dataset nosuch under" in str(missing.exception)
    selection = _fit(tmp_path, caches["plain"], "--method", "zeroshot", "--selection", "last")
    assert "semobridge-t only" in str(selection.exception)
    unknown = _fit(tmp_path, caches["plain"], "--method", "zeroshot", "--hparam", "nope=1")
    assert "unknown hyper-parameter" in str(unknown.exception)


def test_seed_lists_and_hparams_parse():
    assert parse_int_list("1-3,5", "--seeds") == [1, 2, 3, 5]
    assert format_seeds([5, 1, 2, 3]) == "1-3,5"
    with pytest.raises(ClipBridgeError, match="ranges"):
        parse_int_list("3-1", "--seeds")
    assert parse_hparams(["a=1.5", "b=true", "c=text"]) == {"a": 1.5, "b": True, "c": "text"}


def test_cli_main_turns_user_errors_into_one_line_and_exit_1(tmp_path, caches, capsys):
    pytest.importorskip("clipbridge.cache.commands")
    pytest.importorskip("clipbridge.extract.commands")
    from clipbridge import cli

    status = cli.main(["fit", "--cache", str(caches["plain"]), "--method", "zeroshot", "--shots", "99",
                       "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --shots 99 is out of range") and len(err.splitlines()) == 1


def test_unwritable_results_or_runs_folder_is_one_error_before_any_fitting(tmp_path, caches, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fitted = []
    monkeypatch.setattr("clipbridge.evaluate.fitting.runner.fit_and_report", lambda *a, **k: fitted.append(1))
    for flag in ("--results", "--runs"):
        args = ["--cache", caches["plain"], "--runs", tmp_path / "runs", "--results", tmp_path / "results"]
        args[args.index(flag) + 1] = blocker / "sub"
        result = _invoke(fit, args)
        assert isinstance(result.exception, ClipBridgeError) and result.exit_code != 0
        assert re.search(rf"{flag} folder .*a-file/sub is not writable", str(result.exception))
    assert fitted == [] and not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
