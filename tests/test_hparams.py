"""Every hyper-parameter value is checked for type and range before any work: one `error:` line."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.hparams import rules_of
from clipbridge.bridge.registry import REGISTRY, check_hparams
from clipbridge.cache.options import parse_hparams


@pytest.mark.parametrize("item,message", [
    ("steps=abc", "semobridge-t: steps must be an integer, got 'abc'"),
    ("lr=1e-3=2", "semobridge-t: lr must be a finite number, got '1e-3=2'"),
    ("lr=0", "semobridge-t: lr must be > 0, got 0"),
    ("steps=-5", "semobridge-t: steps must be >= 0, got -5"),
    ("csb=1", "semobridge-t: csb must be true or false, got 1"),
    ("selection=best", "semobridge-t: selection must be one of best-val, last, got 'best'"),
    ("selection_blend=[1,2]", "semobridge-t: selection_blend must be a list of 7 finite numbers, got [1, 2]"),
])
def test_bad_values_of_the_trained_bridge_are_one_line_errors(item, message):
    with pytest.raises(BridgeInputError) as info:
        check_hparams(REGISTRY["semobridge-t"], parse_hparams([item]))
    assert str(info.value) == message


def test_nan_infinite_and_crossed_bounds_are_refused():
    for item in ("alpha_low=nan", "alpha_low=NaN", "alpha_high=Infinity"):
        with pytest.raises(BridgeInputError, match="must be a finite number"):
            check_hparams(REGISTRY["cmm"], parse_hparams([item]))
    with pytest.raises(BridgeInputError, match=r"cmm: alpha_low \(6\) must not exceed alpha_high \(5\)"):
        check_hparams(REGISTRY["cmm"], {"alpha_low": 6.0})
    with pytest.raises(BridgeInputError, match="gda: alpha_low must be > 0"):
        check_hparams(REGISTRY["gda"], {"alpha_low": 0.0})


def test_integral_floats_are_accepted_for_integers_and_defaults_all_pass():
    assert check_hparams(REGISTRY["semobridge-t"], {"steps": 1e3})["steps"] == 1000
    for name, method in REGISTRY.items():
        assert check_hparams(method, dict(method.defaults)) == method.defaults, name


def test_every_string_hyper_parameter_declares_its_choices():
    for name, method in REGISTRY.items():
        for key, value in method.defaults.items():
            if isinstance(value, str):
                assert isinstance(rules_of(method).get(key), tuple), (name, key)


def test_fit_with_a_bad_value_stops_with_one_error_line_before_any_work(tmp_path, capsys):
    from clipbridge import cli

    out = tmp_path / "results"
    status = cli.main(["fit", "--cache", str(tmp_path / "absent.h5"), "--trained", "--hparam", "steps=abc",
                       "--results", str(out)])
    assert status == 1 and not out.exists()
    assert capsys.readouterr().err == "error: semobridge-t: steps must be an integer, got 'abc'\n"


def test_methods_command_lists_every_method_its_summary_and_hyper_parameters():
    import json

    from clipbridge.bridge.recipes import METHOD_NAMES
    from clipbridge.evaluate.commands.methods import methods

    assert set(METHOD_NAMES) == set(REGISTRY)
    listing = json.loads(CliRunner().invoke(methods, ["--json"]).output)
    assert {entry["name"] for entry in listing} == set(REGISTRY)
    trained = next(entry for entry in listing if entry["name"] == "semobridge-t")
    assert trained["summary"] and trained["needs"] == ["eos"]
    assert trained["hparams"]["selection"] == {"default": "best-val", "allowed": "one of best-val, last"}
    assert trained["hparams"]["lr"]["allowed"] == "> 0" and trained["hparams"]["steps"]["allowed"] == ">= 0"
    text = CliRunner().invoke(methods, []).output
    assert "semobridge-t: SeMoBridge-T" in text and "    steps = 5000  (>= 0)" in text
