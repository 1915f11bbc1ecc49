"""`info` describes finished and unfinished caches; `fewshot` prints CoOp's indices as JSON."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from clipbridge.cache.commands import fewshot, info
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.integrity import stamp
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.cache.writer import CacheWriter

REPO = Path(__file__).resolve().parents[1]
SPLIT = {"train": [[f"c{label}/{i}.jpg", label, f"class {label}"] for label in (0, 1) for i in range(6)],
         "val": [[f"c{label}/v{i}.jpg", label, f"class {label}"] for label in (0, 1) for i in range(5)],
         "test": [["c0/t.jpg", 0, "class 0"]]}
CLI_STAGES_PRESENT = all(importlib.util.find_spec(name) is not None
                         for name in ("clipbridge.extract.commands", "clipbridge.evaluate.commands.main", "clipbridge.bridge.errors"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("info") / "s.h5"
    return write_synthetic_cache(path, classes=3, train_per_class=2, dim=8, width=6, val=5, test=7, families={"flip": 1})


@pytest.fixture
def split_file(tmp_path) -> Path:
    path = tmp_path / "split.json"
    path.write_text(json.dumps(SPLIT))
    return path


def test_info_shows_provenance_text_sets_and_splits_of_a_finished_cache(finished):
    result = CliRunner().invoke(info, [str(finished)])
    assert result.exit_code == 0, result.output
    assert "status  complete, valid" in result.output
    assert "model: synthetic" in result.output and "pretrained: seed0" in result.output
    assert "classes 3" in result.output
    assert "text    ensemble: 9 prompts" in result.output and "text    cupl: 9 prompts" in result.output
    assert "images  every image of every split" in result.output
    assert "split   train: 6 images, 0 skipped (unreadable)" in result.output
    assert "  views plain: 6 images x 1 float32, 192 B" in result.output
    assert "  views flip: 6 images x 1 float32, 192 B" in result.output
    assert "split   test: 7 images" in result.output


def test_info_json_is_machine_readable(finished):
    result = CliRunner().invoke(info, [str(finished), "--json"])
    summary = json.loads(result.output)
    assert summary["complete"] is True and summary["splits"]["val"]["images"] == 5
    flip = summary["splits"]["train"]["families"]["flip"]
    assert (flip["images"], flip["copies"], flip["bytes"], flip["recipe"]["family"]) == (6, 1, 6 * 8 * 4, "flip")


def test_info_on_an_interrupted_cache_says_how_much_is_done(tmp_path):
    path = tmp_path / "half.h5"
    writer = CacheWriter(path, attrs={"model": "m", "pretrained": "t", "dataset": "d"})
    writer.write_list("train", np.arange(10) % 2, "list")
    writer.ensure_split("train", source=np.arange(10), labels=np.arange(10) % 2, paths=[str(i) for i in range(10)])
    writer.ensure_family("train", "plain", rows=np.arange(10), copies=1, dim=4)
    writer.ensure_family("train", "tip", rows=np.arange(0, 10, 2), copies=10, dim=4)
    writer.write_views("train", "plain", [0, 1, 2, 3], np.ones((4, 1, 4)))
    writer.mark_skipped("train", [4], "unreadable")
    writer.close()
    result = CliRunner().invoke(info, [str(path)])
    assert result.exit_code == 0, result.output
    assert "half.h5.tmp" in result.output
    assert "INCOMPLETE: 6/15 image views done" in result.output
    assert "split   train: 10 images, 1 skipped (unreadable)" in result.output
    assert "views plain: 10 images x 1 float16, 80 B, done 5/10" in result.output
    assert "views tip: 5 images x 10 float16, 400 B, done 1/5" in result.output


def test_info_reports_why_a_broken_cache_is_invalid(finished, tmp_path):
    path = Path(shutil.copy(finished, tmp_path / "bad.h5"))
    with h5py.File(path, "r+") as handle:
        handle["images/val/views/plain/embedding"][2, 0, 0] = np.nan
    result = CliRunner().invoke(info, [str(path)])
    assert "status  INVALID:" in result.output
    assert "damaged cache: /images/val/views/plain/embedding does not match its checksum" in result.output
    with h5py.File(path, "r+") as handle:
        stamp(handle)                   # as a faulty writer would have stored it: the NaN check itself refuses
    result = CliRunner().invoke(info, [str(path)])
    assert "view family 'plain' of split 'val' has NaN/Inf values in row 2" in result.output


def test_info_on_a_missing_or_foreign_file_is_a_user_error(tmp_path):
    result = CliRunner().invoke(info, [str(tmp_path / "none.h5")])
    assert isinstance(result.exception, ClipBridgeError) and "none.h5: no such cache file" in str(result.exception)
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle.attrs["format"] = "other"
    result = CliRunner().invoke(info, [str(tmp_path / "other.h5")])
    assert isinstance(result.exception, ClipBridgeError)
    assert "other.h5: not a clipbridge cache (format attribute is 'other')" in str(result.exception)


def test_fewshot_prints_the_coop_indices_as_json(split_file):
    result = CliRunner().invoke(fewshot, ["--split-file", str(split_file), "--shots", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    indices = json.loads(result.output)
    assert set(indices) == {"train", "val"} and len(indices["train"]) == 4 and len(indices["val"]) == 4
    assert [SPLIT["train"][i][1] for i in indices["train"]] == [0, 0, 1, 1]


def test_fewshot_refuses_fewer_than_one_shot_and_a_missing_split_file(split_file, tmp_path):
    result = CliRunner().invoke(fewshot, ["--split-file", str(split_file), "--shots", "0"])
    assert isinstance(result.exception, ClipBridgeError) and "--shots must be at least 1" in str(result.exception)
    result = CliRunner().invoke(fewshot, ["--split-file", str(tmp_path / "no.json"), "--shots", "1"])
    assert isinstance(result.exception, ClipBridgeError) and "no.json: split file not found" in str(result.exception)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli.py", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ})


@pytest.mark.slow
@pytest.mark.skipif(not CLI_STAGES_PRESENT, reason="cli.py needs every stage's commands module")
def test_cli_runs_info_and_turns_a_fewshot_user_error_into_one_line(finished, split_file):
    shown = _cli("info", str(finished))
    assert shown.returncode == 0, shown.stderr
    assert "complete, valid" in shown.stdout
    refused = _cli("fewshot", "--split-file", str(split_file), "--shots", "0")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: --shots must be at least 1, got 0"


def test_fewshot_treats_shots_above_a_class_size_as_fit_does(tmp_path):
    split = {"train": [[f"a{i}.jpg", 0, "ant"] for i in range(6)] + [[f"b{i}.jpg", 1, "bee"] for i in range(2)]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    result = CliRunner().invoke(fewshot, ["--split-file", str(path), "--shots", "4"])
    assert result.exit_code == 0, result.output
    assert "note: 1 class(es) have fewer than 4 train images; CoOp keeps all they have: bee (2)" in result.output
    assert len(json.loads(result.output.splitlines()[-1])["train"]) == 6
    refused = CliRunner().invoke(fewshot, ["--split-file", str(path), "--shots", "7"])
    assert isinstance(refused.exception, ClipBridgeError)
    assert "--shots 7 is out of range" in str(refused.exception) and "1 to 6 train images per class" in str(refused.exception)


def test_an_empty_seed_list_is_refused():
    from clipbridge.cache.options import parse_int_list

    with pytest.raises(ClipBridgeError, match=r"--seeds '' is not a list of integers"):
        parse_int_list("", "--seeds")
