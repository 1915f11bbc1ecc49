"""Named CuPL sets end to end: extract --cupl NAME=FILE -> cache -> paper recipe -> the text each method fits on.

APE(-T) and SeMoBridge use different CuPL generations (RECIPES.md §1): a cache holds both as text sets
`cupl:ape` and `cupl:semobridge`, and each paper recipe takes its own. A cache from before named sets (one
unnamed `cupl`) still opens, and a paper recipe that needs a named set stops in one line with the extract
command that adds it; running that command adds the text without encoding any image again.

Real extractions (in this process) of a small generated imagefolder, named `dtd` so the paper recipes of the
11 datasets apply, with the bundled tiny CLIP.
"""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipbridge as cb
from clipbridge.bridge.text import class_text_tensors
from clipbridge.cache.reader import open_cache
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.fitting.plan import plan_fit

CLASSES = ("banded", "dotted", "striped")


def _imagefolder(root: Path, per_class: int = 9) -> Path:
    rng = np.random.default_rng(3)
    for label, name in enumerate(CLASSES):
        for i in range(per_class):
            path = root / name / f"{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (36, 44, 3), dtype=np.uint8) // (label + 1)
            Image.fromarray(pixels).save(path, quality=90)
    return root


def _cupl_file(path: Path, whose: str) -> Path:
    path.write_text(json.dumps({name: [f"{whose} says: a {name} texture, sentence {i}." for i in range(2 + k)]
                                for k, name in enumerate(CLASSES)}))
    return path


def _extract(capsys, *args) -> str:
    from clipbridge import cli

    status = cli.main(["extract", "--no-progress", "--workers", "0", *map(str, args)])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cupl")
    return {"root": _imagefolder(tmp / "dtd-images"), "ape": _cupl_file(tmp / "ape.json", "APE"),
            "semobridge": _cupl_file(tmp / "semo.json", "SeMoBridge"), "tmp": tmp}


def _base_args(files, out: Path) -> list:
    return ["--dataset", "imagefolder", "--root", files["root"], "--name", "dtd", "--model", "clipbridge-tiny",
            "--shots", "1", "--seeds", "1", "--view-families", "tip,semo-r0.5-j", "--out", out]


@pytest.fixture(scope="module")
def old_cache(files):
    """A cache as extractions before named sets made it: one unnamed `cupl` set (here APE's file)."""
    from clipbridge import cli

    out = files["tmp"] / "old" / "dtd.h5"
    status = cli.main(["extract", "--no-progress", "--workers", "0",
                       *map(str, _base_args(files, out)), "--cupl", str(files["ape"])])
    assert status == 0
    return out


def test_the_extract_option_takes_several_named_cupl_files(files, tmp_path, capsys):
    out = tmp_path / "dtd.h5"
    printed = _extract(capsys, *_base_args(files, out), "--cupl", f"ape={files['ape']}",
                       "--cupl", f"semobridge={files['semobridge']}")
    assert "cupl:ape 9 prompts" in printed and "cupl:semobridge 9 prompts" in printed
    cache = open_cache(out)
    assert cache.text_sets == ["coop", "ensemble", "cupl:ape", "cupl:semobridge"]
    assert cache.text_attrs("cupl:ape")["file"] == "ape.json"
    assert cache.text("cupl:semobridge").prompts[0].startswith("SeMoBridge says")


def _class_text(cache, sets):
    text = cache.text(sets)
    return class_text_tensors(text.projected, text.eos, text.classes.long(), len(cache.classnames)).projected


def test_a_cache_with_two_cupl_sets_feeds_ape_and_semobridge_their_own_text(files, tmp_path, capsys):
    out = tmp_path / "dtd.h5"
    _extract(capsys, *_base_args(files, out), "--cupl", f"semobridge={files['semobridge']}",
             "--cupl", f"ape={files['ape']}")
    cache = open_cache(out)
    ape = cb.fit(cache, "ape", shots=1, seeds=[1], device="cpu")
    semo = cb.fit(cache, "semobridge", shots=1, seeds=[1], device="cpu")
    assert ape.meta["prompt_sets"] == ["coop", "cupl:ape"] and ape.meta["view_families"] == ["tip"]
    assert semo.meta["prompt_sets"] == ["ensemble", "cupl:semobridge"]
    dim = cache.text("coop").projected.shape[-1]
    ape_text = ape.state.tensors["text"].reshape(-1, len(CLASSES), dim)[0]            # T̄ [C, D] APE fits on
    semo_text = semo.state.tensors["text_prototypes"].reshape(-1, len(CLASSES), dim)[0]
    torch.testing.assert_close(ape_text.float(), _class_text(cache, ["coop", "cupl:ape"]))
    torch.testing.assert_close(semo_text.float(), _class_text(cache, ["ensemble", "cupl:semobridge"]))
    # each method's text is its own CuPL set's: swapping the sets changes it
    assert not torch.allclose(ape_text.float(), _class_text(cache, ["coop", "cupl:semobridge"]), atol=1e-4)
    assert not torch.allclose(semo_text.float(), _class_text(cache, ["ensemble", "cupl:ape"]), atol=1e-4)


def test_a_paper_recipe_whose_cupl_set_the_cache_lacks_stops_with_the_extract_command(old_cache, tmp_path, capsys,
                                                                                     files):
    path = tmp_path / "dtd.h5"
    shutil.copy(old_cache, path)
    cache = open_cache(path)
    assert cache.text_sets == ["coop", "ensemble", "cupl"]             # an old cache still opens
    with pytest.raises(ClipBridgeError) as info:
        plan_fit(cache, "ape", 1)
    message = str(info.value)
    assert "\n" not in message
    assert "uses text set(s) cupl:ape (cupl:ape = APE's gpt3_prompts/CuPL_prompts_<dataset>.json" in message
    command = message.split("add with: ", 1)[1].split(";", 1)[0]
    assert command.startswith("clipbridge extract --dataset imagefolder") and f"--out {path}" in command
    assert command.endswith("--prompts cupl:ape --cupl ape=FILE")
    assert "or --prompts coop,cupl (the cache's unnamed CuPL set instead)" in message
    with pytest.raises(ClipBridgeError, match=r"uses text set\(s\) cupl:semobridge .*--cupl semobridge=FILE"):
        plan_fit(cache, "semobridge-t", 1)
    assert plan_fit(cache, "ape", 1, prompts=["coop", "cupl"]).prompt_sets == ("coop", "cupl")   # the way out named
    before = cache.views("train", "tip", np.arange(3))

    words = [w.replace("ape=FILE", f"ape={files['ape']}") for w in shlex.split(command)[2:]]
    printed = _extract(capsys, *words)
    assert "encoded 0 images (0 views)" in printed                   # only the text is new: images are copied
    cache = open_cache(path)
    assert cache.text_sets == ["coop", "ensemble", "cupl", "cupl:ape"]
    assert torch.equal(cache.views("train", "tip", np.arange(3)), before)
    assert plan_fit(cache, "ape", 1).prompt_sets == ("coop", "cupl:ape")


def test_a_cupl_file_that_prompts_leaves_out_is_refused_before_any_work(files, tmp_path, capsys):
    from clipbridge import cli

    out = tmp_path / "dtd.h5"
    status = cli.main(["extract", "--no-progress", *map(str, _base_args(files, out)), "--prompts", "coop,cupl:ape",
                       "--cupl", f"ape={files['ape']}", "--cupl", f"semobridge={files['semobridge']}"])
    assert status == 1 and not out.exists() and not out.with_name("dtd.h5.tmp").exists()
    assert "error: --cupl gives cupl:semobridge, which --prompts coop,cupl:ape leaves out" in capsys.readouterr().err
