"""`extract` end to end on the families beyond OpenAI-style CLIP, with the project's tiny stand-ins:

clipbridge-tiny-affine (SigLIP-like: affine text projection, last-token pooling, logit bias) and
clipbridge-tiny-coca (CoCa-like: CLS token appended to the text); and a text tower without EOS features
(the structure probe made to say so), whose cache serves every method but SeMoBridge(-T).
Runs cli.main in-process on a few generated images (random weights; a checkpoint file for the affine model,
so its projection bias is not open_clip's zero initialisation).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_extract_cli import _generated_imagefolder, run_cli_in_process

from clipbridge.cache.commands import info
from clipbridge.cache.reader import open_cache
from clipbridge.extract import models


def _extract(capsys, *args) -> subprocess.CompletedProcess:
    return run_cli_in_process(capsys, "--workers", "0", "--prompts", "ensemble,classname", *args)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    return _generated_imagefolder(tmp_path_factory.mktemp("family-images"), classes=3, per_class=4)


@pytest.fixture(scope="module")
def affine_checkpoint(tmp_path_factory) -> tuple[models.LoadedModel, Path]:
    loaded = models.load_model("clipbridge-tiny-affine", "random", device="cpu")
    with torch.no_grad():
        loaded.model.text.text_projection.bias.normal_(generator=torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("affine-weights") / "tiny-affine.pt"
    torch.save(loaded.model.state_dict(), path)
    return loaded, path


def _first_train_image(cache, root: Path, preprocess) -> torch.Tensor:
    return preprocess(Image.open(root / cache.rows("train").paths[0]).convert("RGB"))[None]


def test_siglip_like_model_extracts_eos_wt_bias_and_logit_bias(tmp_path, capsys, image_root, affine_checkpoint):
    loaded, checkpoint = affine_checkpoint
    out = tmp_path / "affine.h5"
    result = _extract(capsys, "--dataset", "imagefolder", "--root", image_root, "--model", "clipbridge-tiny-affine",
                      "--pretrained", checkpoint, "--out", out)
    assert result.returncode == 0, result.stderr
    cache = open_cache(out)
    head = cache.text_head
    assert (head["text_pooling"], head["projection_kind"], head["has_projection_bias"]) == ("last", "affine", True)
    assert torch.equal(cache.text_projection_bias, loaded.model.text.text_projection.bias.detach())
    assert cache.logit_bias == -10.0
    for name in ("ensemble", "classname"):
        text = cache.text([name])
        torch.testing.assert_close(text.eos @ cache.text_projection + cache.text_projection_bias, text.projected,
                                   rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        expected = loaded.model.encode_image(_first_train_image(cache, image_root, loaded.preprocess))[0]
    torch.testing.assert_close(cache.views("train", "plain", [0])[0, 0], expected, rtol=1e-4, atol=1e-5)
    described = CliRunner().invoke(info, [str(out)]).output
    assert "EOS features stored, Wt [64, 96] + b [96] (pooling last, affine); logit bias -10" in described


def test_coca_like_model_extracts_its_cls_feature_and_raw_image_embeddings(tmp_path, capsys, image_root):
    out = tmp_path / "coca.h5"
    result = _extract(capsys, "--dataset", "imagefolder", "--root", image_root, "--model", "clipbridge-tiny-coca",
                      "--pretrained", "random", "--out", out)
    assert result.returncode == 0, result.stderr
    cache = open_cache(out)
    assert cache.has_eos and cache.text_head["text_pooling"] == "cls-appended" and cache.text_projection_bias is None
    text = cache.text(["ensemble"])
    torch.testing.assert_close(text.eos @ cache.text_projection, text.projected, rtol=1e-5, atol=1e-5)
    loaded = models.load_model("clipbridge-tiny-coca", "random", device="cpu")
    with torch.no_grad():      # CoCa's encode_image normalises by default; the cache holds the raw output
        raw = loaded.model.encode_image(_first_train_image(cache, image_root, loaded.preprocess), normalize=False)[0]
    torch.testing.assert_close(cache.views("train", "plain", [0])[0, 0], raw, rtol=1e-4, atol=1e-5)
    assert abs(float(raw.norm()) - 1.0) > 0.1


def test_a_text_tower_without_eos_features_still_extracts_and_says_what_will_not_run(tmp_path, capsys, image_root,
                                                                                       monkeypatch):
    monkeypatch.setattr(models, "text_head", lambda model: models.TextHead(
        "hf:MeanPooler", "Sequential", note="the text projection is Sequential, not a linear or affine map"))
    out = tmp_path / "bare.h5"
    result = _extract(capsys, "--dataset", "imagefolder", "--root", image_root, "--model", "clipbridge-tiny",
                      "--pretrained", "random", "--out", out)
    assert result.returncode == 0, result.stderr
    assert ("note: no EOS features stored (the text projection is Sequential, not a linear or affine map); "
            "semobridge, semobridge-t cannot run on this cache") in result.stdout
    cache = open_cache(out)
    assert not cache.has_eos and cache.text(["ensemble"]).eos is None
    assert cache.views("test", "plain").shape[-1] == 96
