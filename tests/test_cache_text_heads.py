"""What a cache holds about the text tower's end: EOS features optional, projection and logit biases,
older caches read as before, `info` says it, and methods needing EOS features refuse or are skipped."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from cache_variants import without_eos
from click.testing import CliRunner

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.cache.commands import cache_summary, info
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.reader import open_cache
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.cache.writer import CacheWriter
from clipbridge.evaluate.commands.main import bench, fit
from clipbridge.evaluate.fitting.tasks import build_fit_task

SMALL = {"classes": 5, "train_per_class": 4, "dim": 16, "width": 12, "val": 20, "test": 40, "families": {"tip": 3}}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    plain = write_synthetic_cache(root / "plain.h5", seed=1, dataset="plain", **SMALL)
    affine = write_synthetic_cache(root / "affine.h5", seed=1, dataset="affine", projection_bias=3.0, **SMALL)
    bare = without_eos(write_synthetic_cache(root / "src.h5", seed=2, dataset="bare", **SMALL), root / "bare.h5")
    return {"plain": plain, "affine": affine, "bare": bare}


def test_a_cache_without_eos_features_reads_without_them_and_its_tasks_carry_none(caches):
    cache = open_cache(caches["bare"])
    assert not cache.has_eos and cache.text_projection is None and cache.text_projection_bias is None
    assert cache.text_head["projection_kind"] == "Sequential" and cache.text(["ensemble"]).eos is None
    task, _ = build_fit_task(cache, shots=2, seeds=(1,))
    assert task.text_eos is None and task.text_projection is None and task.width is None
    with h5py.File(caches["bare"], "r") as handle:
        assert "eos" not in handle["text/ensemble"] and "text_projection" not in handle["model"]


def test_an_affine_cache_holds_its_bias_and_an_older_cache_reads_as_before(caches, tmp_path):
    cache = open_cache(caches["affine"])
    assert cache.has_eos and cache.text_head["has_projection_bias"] and cache.text_projection_bias.shape == (16,)
    text = cache.text(["ensemble"])
    torch.testing.assert_close(text.eos @ cache.text_projection + cache.text_projection_bias, text.projected,
                               rtol=1e-5, atol=1e-4)
    older = tmp_path / "older.h5"
    older.write_bytes(caches["plain"].read_bytes())
    with h5py.File(older, "a") as handle:        # a cache written before the /model attributes existed
        for key in list(handle["model"].attrs):
            del handle["model"].attrs[key]
    old = open_cache(older)
    assert old.has_eos and old.text_projection_bias is None and old.logit_bias is None
    assert torch.equal(old.text(["ensemble"]).eos, open_cache(caches["plain"]).text(["ensemble"]).eos)


def test_the_writer_takes_eos_features_exactly_when_the_model_part_says_so(tmp_path):
    attrs = {"model": "m", "pretrained": "p", "dataset": "d"}
    with CacheWriter(tmp_path / "a.h5", attrs=attrs) as writer:
        writer.write_model(None, 100.0)
        with pytest.raises(ClipBridgeError, match="holds no EOS features .* but eos is given"):
            writer.write_text("s", ["x"], np.array([0]), np.ones((1, 4)), np.ones((1, 3)))
        with pytest.raises(ClipBridgeError, match="a projection bias needs the text projection"):
            writer.write_model(None, 100.0, projection_bias=np.ones(4))
    with CacheWriter(tmp_path / "b.h5", attrs=attrs) as writer:
        writer.write_model(np.ones((3, 4)), 100.0, logit_bias=-10.0)
        with pytest.raises(ClipBridgeError, match="holds EOS features .* but eos is missing"):
            writer.write_text("s", ["x"], np.array([0]), np.ones((1, 4)), None)
        with pytest.raises(ClipBridgeError, match=r"text_projection_bias: expected \[4\], got \(3,\)"):
            writer.write_model(np.ones((3, 4)), 100.0, projection_bias=np.ones(3))


def test_info_says_what_the_cache_holds_about_the_text_tower(caches):
    runner = CliRunner()
    bare = runner.invoke(info, [str(caches["bare"])])
    assert bare.exit_code == 0, bare.output
    assert "model   no EOS features (the text projection is Sequential, not a linear or affine map)" in bare.output
    affine = runner.invoke(info, [str(caches["affine"])]).output
    assert "model   EOS features stored, Wt [12, 16] + b [16]" in affine
    summary = cache_summary(caches["affine"])["model"]
    assert summary["has_eos"] and summary["has_projection_bias"] and summary["logit_bias"] is None


def test_fit_refuses_semobridge_on_a_cache_without_eos_in_one_line_and_runs_other_methods(caches, tmp_path):
    args = ["--cache", str(caches["bare"]), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "r"),
            "--device", "cpu", "--shots", "2", "--seeds", "1"]
    refused = CliRunner().invoke(fit, args + ["--method", "semobridge"])
    assert isinstance(refused.exception, BridgeInputError)
    assert str(refused.exception).startswith("semobridge needs the text encoder's pre-projection EOS features")
    assert not (tmp_path / "r").exists()
    for method in ("zeroshot", "tip-adapter", "gda"):
        ran = CliRunner().invoke(fit, args + ["--method", method])
        assert ran.exit_code == 0, ran.output


def test_bench_all_methods_skips_those_a_cache_cannot_serve_with_a_note(caches, tmp_path):
    result = CliRunner().invoke(bench, ["--dataset", f"{caches['plain']},{caches['bare']}", "--methods",
                                        "zeroshot,semobridge", "--shots", "1", "--seeds", "1-2", "--device", "cpu",
                                        "--results", str(tmp_path), "--name", "grid", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "note: semobridge skipped on bare: needs the text encoder's pre-projection EOS" in result.output
    assert "warning" not in result.output
    markdown = (tmp_path / "grid" / "table.md").read_text()
    bare_block = markdown.split("### bare")[1].split("###")[0]
    assert "| semobridge | skipped* |" in bare_block and "| zeroshot | " in bare_block
    assert "semobridge skipped: needs the text encoder's pre-projection EOS features" in bare_block
    plain_block = markdown.split("### plain")[1]
    assert "| semobridge | skipped" not in plain_block.split("###")[0]
    import json
    summary = json.loads((tmp_path / "grid" / "summary.json").read_text())
    assert list(summary["skipped_methods"]) == ["bare"] and "semobridge" in summary["skipped_methods"]["bare"]
