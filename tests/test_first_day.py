"""Issue 22's first-day frictions: an empty --seeds is refused (never read as the default seed); the default
`extract` stores the view families the paper recipes use, so the default (paper) `fit` of every method runs
on it, and says what that costs, while `--view-families plain` keeps the minimal cache; on a synthetic cache
the missing-family error names the generator's --families, and that command works."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import clipbridge as cb
from clipbridge import cli
from clipbridge.bridge.recipes import recipe_families
import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.registry import REGISTRY, get_method
from clipbridge.cache.options import parse_int_list
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.errors import ClipBridgeError
from image_folders import striped_imagefolder

#: Methods whose paper recipe uses augmented views on any dataset (they failed after a plain-only extract).
AUGMENTED_BY_RECIPE = {"tip-adapter", "tip-adapter-f", "ape", "ape-t", "gda", "clip-adapter"}
TINY = ["--model", "clipbridge-tiny", "--workers", "0", "--no-progress"]
#: Speed knobs on top of each method's paper recipe (the views are what is checked, not the accuracy).
FAST = {"steps": 12, "epochs": 2, "search_rounds": 2, "search_per_round": 16, "max_iter": 50}


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory):
    """(the cache a plain `extract` wrote, its stderr)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("first-day")
    out = tmp / "flowers.h5"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main(["extract", "--dataset", "imagefolder", "--root", str(striped_imagefolder(tmp / "images", 3, 6, size=(44, 60), seed=1)),
                           *TINY, "--out", str(out)])
    assert status == 0, err.getvalue()
    return cb.open_cache(out), err.getvalue()


@pytest.mark.parametrize("text", ["", " ", ","])
def test_an_empty_integer_list_is_refused(text):
    with pytest.raises(ClipBridgeError, match="--seeds"):
        parse_int_list(text, "--seeds")


@pytest.mark.parametrize("command", [
    ["fit", "--dataset", "nowhere", "--seeds", ""],
    ["bench", "--dataset", "nowhere", "--seeds", ""],
    ["extract", "--dataset", "imagefolder", "--root", "nowhere", "--seeds", ""],
    ["extract", "--dataset", "imagefolder", "--root", "nowhere", "--shots", ""],
])
def test_commands_refuse_an_empty_seed_list_before_any_work(command, capsys):
    assert cli.main(command) != 0
    err = capsys.readouterr().err
    option = "--shots" if "--shots" in command else "--seeds"
    assert f"error: {option} '' is not a list of integers" in err and len(err.strip().splitlines()) == 1


def test_the_default_extract_stores_the_recipes_families_and_says_what_they_cost(default_cache):
    cache, err = default_cache
    expected = recipe_families(str(cache.attrs["dataset"]), [1, 2, 4, 8, 16])
    assert list(cache.families("train")) == expected and len(expected) > 1
    train = cache.rows("train").source.size
    assert all(info.rows.size == train for info in cache.families("train").values())     # every train image
    assert list(cache.families("test")) == ["plain"]
    assert cache.coverage.is_everything
    views = 1 + sum(cache.family("train", f).copies for f in expected if f != "plain")
    assert f"on every train image: {views} views instead of 1" in err and "--view-families plain" in err


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_default_fit_of_every_method_runs_on_the_default_extract(default_cache, tmp_path, name):
    cache, _ = default_cache
    overrides = [f"--hparam={k}={v}" for k, v in FAST.items() if k in get_method(name).defaults]
    status = cli.main(["fit", "--cache", str(cache.path), "--method", name, "--shots", "2", "--device", "cpu",
                       "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--no-progress",
                       *overrides])
    assert status == 0, name
    (saved,) = [p for p in (tmp_path / "runs").glob(f"*/{name}/*") if p.is_dir()]
    run = cb.load_run(saved)
    assert run.meta["recipe"] == "paper" and run.method == name
    assert set(run.meta["view_families"]) <= set(cache.families("train"))
    if name in AUGMENTED_BY_RECIPE:                 # the ones that asked for more views before (issue 22)
        assert set(run.meta["view_families"]) - {"plain"}, run.meta["view_families"]


def test_view_families_plain_keeps_the_minimal_cache(tmp_path, capsys):
    out = tmp_path / "plain.h5"
    status = cli.main(["extract", "--dataset", "imagefolder", "--root", str(striped_imagefolder(tmp_path / "images", 3, 6, size=(44, 60), seed=1)),
                       *TINY, "--view-families", "plain", "--out", str(out)])
    assert status == 0
    assert list(cb.open_cache(out).families("train")) == ["plain"]
    assert "instead of 1" not in capsys.readouterr().err


def test_a_synthetic_cache_names_the_generators_families_and_that_command_works(tmp_path):
    path = write_synthetic_cache(tmp_path / "syn.h5", classes=3, train_per_class=4, dim=16, width=16, val=6,
                                 test=6, families={"flip": 1})
    with pytest.raises(ClipBridgeError) as info:
        cb.fit(cb.open_cache(path), method="tip-adapter", shots=2, device="cpu")
    message = str(info.value)
    assert "extract" not in message and "\n" not in message
    command = message.split("write it again with those views: ", 1)[1]
    assert command.startswith("python -m clipbridge.cache.synthetic ") and "--families flip:1,tip:10" in command
    words = shlex.split(command)
    result = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    regenerated = cb.open_cache(path)
    assert list(regenerated.families("train")) == ["plain", "flip", "tip"]
    assert regenerated.classnames == ["class 000", "class 001", "class 002"]
    run = cb.fit(regenerated, method="tip-adapter", shots=2, device="cpu", hparams={"search_rounds": 2})
    assert run.meta["view_families"]
