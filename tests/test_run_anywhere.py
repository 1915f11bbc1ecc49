"""A run works from any folder: run.json holds the cache's absolute path; a moved cache is looked for beside
the run and under --cache-root, and the error names every place looked."""
from __future__ import annotations

import json
import shutil

import pytest

import clipbridge as cb
import clipbridge.cli as cli
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.evaluate.fitting.api import load_run


@pytest.fixture
def fitted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_synthetic_cache(tmp_path / "syn.h5", classes=3, train_per_class=4, dim=8, width=6, val=6, test=9)
    run = cb.fit(cb.open_cache("syn.h5"), method="zeroshot", shots=1, seeds=[1])
    return run.save(tmp_path / "runs"), path


def test_run_json_records_the_absolute_cache_path(fitted):
    folder, path = fitted
    meta = json.loads((folder / "run.json").read_text())["meta"]
    assert meta["cache"] == str(path.resolve())


def test_evaluate_from_another_folder(fitted, tmp_path, monkeypatch, capsys):
    folder, _ = fitted
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["evaluate", str(folder), "--results", str(elsewhere / "results")]) == 0


def test_a_moved_cache_is_found_under_the_cache_root(fitted, tmp_path):
    folder, path = fitted
    (tmp_path / "store" / "x").mkdir(parents=True)
    shutil.move(path, tmp_path / "store" / "x" / "syn.h5")
    cache = load_run(folder).open_cache(cache_root=tmp_path / "store")
    assert cache.path == tmp_path / "store" / "x" / "syn.h5"


def test_a_cache_moved_beside_the_runs_is_found(fitted, tmp_path):
    folder, path = fitted
    shutil.move(path, tmp_path / "runs" / "syn.h5")
    assert load_run(folder).open_cache(cache_root=None).path.parent == tmp_path / "runs"


def test_a_missing_cache_names_every_place_looked(fitted, tmp_path):
    folder, path = fitted
    path.unlink()
    other = write_synthetic_cache(tmp_path / "store" / "syn.h5", classes=3, train_per_class=4, dim=8, width=6,
                                  val=6, test=9, seed=5)
    with pytest.raises(ClipBridgeError) as info:
        load_run(folder).open_cache(cache_root=tmp_path / "store")
    message = str(info.value)
    assert "\n" not in message and "was not found; looked in" in message
    for place in (path.resolve(), folder / "syn.h5", tmp_path / "runs" / "syn.h5", other):
        assert str(place) in message
    assert f"{other} hold other caches" in message and "--cache-root FOLDER" in message


def test_a_state_of_another_method_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_synthetic_cache(tmp_path / "syn.h5", classes=3, train_per_class=4, dim=8, width=6, val=6, test=9)
    cache = cb.open_cache("syn.h5")
    zeroshot = cb.fit(cache, method="zeroshot", shots=1, seeds=[1]).save(tmp_path / "runs")
    gda = cb.fit(cache, method="gda", shots=1, seeds=[1], recipe="uniform").save(tmp_path / "runs")
    shutil.copy(zeroshot / "state.pt", gda / "state.pt")
    with pytest.raises(ClipBridgeError) as info:
        load_run(gda)
    message = str(info.value)
    assert "\n" not in message and "state.pt does not belong to this run: run.json says gda" in message


@pytest.mark.parametrize("where", ["a_file/out.csv", "/proc/clipbridge-out.csv"])
def test_predict_out_into_an_unwritable_place_is_one_line(fitted, tmp_path, capsys, where):
    folder, _ = fitted
    (tmp_path / "a_file").write_text("not a folder")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    code = cli.main(["predict", str(folder), str(image), "--out", where])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: --out folder ") and "not writable" in err
