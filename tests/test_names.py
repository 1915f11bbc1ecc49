"""Names are names, not paths: `bench --name` and `extract --name` refuse separators and '..'."""
from __future__ import annotations

import pytest

import clipbridge.cli as cli
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.names import check_name


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "a\\b", "..", ".", ".hidden", "x..y", "", "  ", "-x",
                                  "tab\there"])
def test_paths_and_odd_names_are_refused(name):
    with pytest.raises(ClipBridgeError, match=r"give a plain name"):
        check_name(name, "--name")


@pytest.mark.parametrize("name", ["food101", "my-run_2", "v1.5", "dtd"])
def test_plain_names_pass(name):
    assert check_name(name, "--name") == name


def test_bench_name_escaping_results_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    code = cli.main(["bench", "--cache", str(tmp_path / "absent.h5"), "--name", "../../escaped",
                     "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "error: --name '../../escaped' contains a path separator" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["results"]


def test_extract_name_is_refused(tmp_path, capsys):
    code = cli.main(["extract", "--dataset", "imagefolder", "--root", str(tmp_path), "--name", "../up"])
    assert code == 1 and "error: --name '../up'" in capsys.readouterr().err

