"""The synthetic cache is a valid cache with CLIP-like structure: zero-shot works but imperfectly,
labelled images help, raw norms look like CLIP's, and a seed fixes the file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.reader import open_cache
from clipbridge.cache.synthetic import write_synthetic_cache

REPO = Path(__file__).resolve().parents[1]
SIZE = {"classes": 20, "train_per_class": 16, "dim": 64, "width": 48, "val": 100, "test": 1000}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "s.h5"
    return open_cache(write_synthetic_cache(path, families={"flip": 1, "tip": 3}, prompts=3, seed=0, **SIZE))


def test_synthetic_cache_has_the_requested_shapes(synthetic):
    c, k, d, w = SIZE["classes"], SIZE["train_per_class"], SIZE["dim"], SIZE["width"]
    assert synthetic.text_projection.shape == (w, d) and len(synthetic.classnames) == c
    assert synthetic.text_sets == ["coop", "ensemble", "cupl"]
    assert synthetic.text("coop").prompts[0] == synthetic.text("ensemble").prompts[0] == "a photo of a class 000."
    text = synthetic.text(["ensemble"])
    assert text.eos.shape == (3 * c, w) and text.projected.shape == (3 * c, d)
    assert torch.allclose(text.eos @ synthetic.text_projection, text.projected, rtol=1e-4, atol=1e-4)
    assert synthetic.views("train", "plain").shape == (c * k, 1, d)
    assert synthetic.views("train", "tip").shape == (c * k, 3, d)
    assert torch.bincount(torch.from_numpy(synthetic.rows("train").labels), minlength=c).tolist() == [k] * c
    assert list(synthetic.families("val")) == ["plain"] and list(synthetic.families("train")) == ["plain", "flip", "tip"]
    assert synthetic.plain("val")[0].shape == (SIZE["val"], d)
    assert synthetic.plain("test")[0].shape == (SIZE["test"], d)
    assert synthetic.coverage.is_everything


def test_image_embeddings_are_raw_with_clip_like_norms_and_a_modality_gap(synthetic):
    images = synthetic.plain("test")[0]
    norms = images.norm(dim=-1)
    assert 8 < norms.mean() < 12
    text = _unit(synthetic.text(["ensemble"]).projected)
    # images share a common direction the text does not have (the gap): their mean is far from the text's
    assert (_unit(images).mean(0) - text.mean(0)).norm() > 0.3


def test_zero_shot_is_above_chance_but_imperfect_and_shots_improve_it(synthetic):
    c = SIZE["classes"]
    text = synthetic.text(["ensemble", "cupl"])
    prototypes = _unit(torch.stack([_unit(text.projected[text.classes == k]).mean(0) for k in range(c)]))
    test, test_labels, _ = synthetic.plain("test")
    queries = _unit(test)
    zero_shot = queries @ prototypes.T
    zero_shot_accuracy = (zero_shot.argmax(1) == test_labels).float().mean().item()
    assert 3.0 / c < zero_shot_accuracy < 0.9
    train, train_labels, _ = synthetic.plain("train")
    support = _unit(train)
    means = _unit(torch.stack([support[train_labels == k].mean(0) for k in range(c)]))
    combined = zero_shot + queries @ means.T
    few_shot_accuracy = (combined.argmax(1) == test_labels).float().mean().item()
    assert few_shot_accuracy > zero_shot_accuracy + 0.1


def test_same_seed_gives_the_same_cache_and_another_seed_another(tmp_path):
    small = {**SIZE, "test": 50}
    first = open_cache(write_synthetic_cache(tmp_path / "a.h5", seed=3, **small))
    again = open_cache(write_synthetic_cache(tmp_path / "b.h5", seed=3, **small))
    other = open_cache(write_synthetic_cache(tmp_path / "c.h5", seed=4, **small))
    assert torch.equal(first.plain("test")[0], again.plain("test")[0])
    assert torch.equal(first.text(["cupl"]).eos, again.text(["cupl"]).eos)
    assert not torch.equal(first.plain("test")[0], other.plain("test")[0])


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ClipBridgeError, match=r"classes must be at least 2, got 1"):
        write_synthetic_cache(tmp_path / "x.h5", **{**SIZE, "classes": 1})


def test_module_command_writes_a_valid_cache(tmp_path):
    out = tmp_path / "cli.h5"
    command = [sys.executable, "-m", "clipbridge.cache.synthetic", "--classes", "5", "--shots", "4", "--dim", "16",
               "--width", "12", "--val", "10", "--test", "20", "--families", "flip:1,tip:2", "--prompts", "2", "--seed", "7",
               "--out", str(out)]
    env = {**os.environ}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    cache = open_cache(out)
    assert cache.views("train", "tip").shape == (20, 2, 16) and len(cache.text(["ensemble"]).prompts) == 10
    assert list(cache.families("train")) == ["plain", "flip", "tip"]
    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_named_cupl_sets_let_the_paper_recipes_of_the_11_datasets_plan_on_a_synthetic_cache(tmp_path):
    """named_cupl stores cupl:NAME beside the unnamed set (the paper grid benchmark's caches need cupl:ape and
    cupl:semobridge); without them the paper recipe of APE on dtd stops, with them it plans."""
    from clipbridge.evaluate.fitting.plan import plan_fit

    small = {**SIZE, "test": 20, "dataset": "dtd", "families": {"coop-rrc": 1, "tip": 2, "semo-r0.5-j": 2}}
    bare = open_cache(write_synthetic_cache(tmp_path / "bare.h5", **small))
    with pytest.raises(ClipBridgeError, match="uses text set"):
        plan_fit(bare, "ape", 1, recipe="paper")
    named = open_cache(write_synthetic_cache(tmp_path / "named.h5", named_cupl=("ape", "semobridge"), **small))
    assert named.text_sets == ["coop", "ensemble", "cupl", "cupl:ape", "cupl:semobridge"]
    assert torch.equal(named.text(["cupl:ape"]).eos, named.text(["cupl"]).eos)
    assert plan_fit(named, "ape", 1, recipe="paper").prompt_sets[-1] == "cupl:ape"
    assert plan_fit(named, "semobridge", 1, recipe="paper").prompt_sets[-1] == "cupl:semobridge"
    with pytest.raises(ClipBridgeError, match="named CuPL sets need plain names"):
        write_synthetic_cache(tmp_path / "bad.h5", named_cupl=("a b",), **small)
