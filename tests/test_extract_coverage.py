"""Stage one at scale: `extract --shots/--seeds` stores exactly the images CoOp's sampler picks (plus the
validation images the protocols need and the whole test split), records the pairs it covers, and extends
later by encoding only what is new."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clipbridge.cache.commands import fewshot
from clipbridge.cache.coverage import Coverage, plan_rows
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.fewshot import read_split_file

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers17"
PAIRS = [(k, s) for k in (1, 2, 4, 8, 16) for s in (1, 2, 3)]


def _fewshot_cli(split_file: Path, shots: int, seed: int) -> dict:
    result = CliRunner().invoke(fewshot, ["--split-file", str(split_file), "--shots", str(shots), "--seed", str(seed)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("dataset", ["EuroSAT", "DescribableTextures"])
def test_planned_rows_are_the_union_of_what_fewshot_prints_for_every_covered_pair(shared_dir, dataset):
    split_file = shared_dir / "data" / "coop" / f"split_zhou_{dataset}.json"
    lists = {split: [label for _, label, _ in rows] for split, rows in read_split_file(split_file).items()}
    clean = plan_rows(lists, Coverage.sampled(PAIRS, whole_val=False))
    paper = plan_rows(lists, Coverage.sampled(PAIRS, whole_val=True))
    train, val = set(), set()
    for shots, seed in PAIRS:
        picked = _fewshot_cli(split_file, shots, seed)
        train.update(picked["train"])
        val.update(picked["val"])
    assert clean["train"].rows.tolist() == sorted(train) == clean["train"].support.tolist()
    assert clean["val"].rows.tolist() == sorted(val)
    assert paper["val"].rows.tolist() == list(range(len(lists["val"])))
    assert clean["test"].rows.tolist() == list(range(len(lists["test"])))


def test_without_a_val_split_the_held_out_validation_images_get_the_plain_view_only():
    labels = {"train": list(np.arange(60) % 3), "test": list(np.arange(9) % 3)}
    plan = plan_rows(labels, Coverage.sampled([(4, 1), (4, 2)], whole_val=True))["train"]
    assert plan.support.size <= 24 and set(plan.support) < set(plan.rows)
    assert plan.rows.size - plan.support.size >= 12            # min(4, 4) per class per seed, outside the support


def test_coverage_union_containment_and_its_record():
    a = Coverage.sampled([(1, 1), (2, 1)], whole_val=False)
    b = Coverage.sampled([(2, 2)], whole_val=True)
    both = a.union(b)
    assert both.pairs == ((1, 1), (2, 1), (2, 2)) and both.whole_val
    assert both.contains(a) and both.contains(b) and not a.contains(both)
    assert Coverage.everything().contains(both) and not both.contains(Coverage.everything())
    assert Coverage.from_attr(both.to_attr()) == both and Coverage.from_attr(None).is_everything
    assert both.missing([2], [1, 2, 3]) == [(2, 3)]
    assert a.describe() == "sampled train images of shots 1-2 x seeds 1 (2 pairs), sampled val images only"
    with pytest.raises(ClipBridgeError, match="at least one"):
        Coverage.sampled([], whole_val=True)


def _extract(capsys, *args) -> subprocess.CompletedProcess:
    from clipbridge import cli

    status = cli.main(["extract", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


@pytest.fixture(scope="module")
def flowers(shared_dir) -> list[str]:
    return ["--dataset", "splitfile", "--root", str(FLOWERS / "jpg"), "--split-file",
            str(FLOWERS / "split_zhou_Flowers17.json"), "--model", "clipbridge-tiny", "--pretrained", "random",
            "--workers", "0", "--batch-size", "64"]


@pytest.mark.slow
def test_sampled_extraction_stores_coops_images_and_extends_with_only_the_new_ones(flowers, tmp_path, capsys):
    from clipbridge.cache.reader import open_cache
    from clipbridge.evaluate.fitting.tasks import build_fit_task

    out = tmp_path / "flowers.h5"
    split_file = FLOWERS / "split_zhou_Flowers17.json"
    first = _extract(capsys, *flowers, "--shots", "1,2", "--seeds", "1-2", "--view-families", "flip",
                     "--protocols", "clean", "--out", out)
    assert first.returncode == 0, first.stderr
    cache = open_cache(out)
    picked = [_fewshot_cli(split_file, k, s) for k in (1, 2) for s in (1, 2)]
    train = sorted({i for p in picked for i in p["train"]})
    assert cache.rows("train").source.tolist() == train
    assert cache.rows("val").source.tolist() == sorted({i for p in picked for i in p["val"]})
    assert cache.rows("test").source.size == 340 and list(cache.families("test")) == ["plain"]
    assert cache.families("train")["flip"].rows.size == len(train)
    assert f"encoded {len(train) + cache.rows('val').source.size + 340} images" in first.stdout

    with pytest.raises(ClipBridgeError) as refused:
        build_fit_task(cache, shots=2, seeds=[3])
    assert "\n" not in str(refused.value) and "--shots 2 --seeds 3 --view-families flip" in str(refused.value)

    plain_before = cache.views("train", "plain")
    val_before = set(cache.rows("val").source.tolist())
    again = _extract(capsys, *flowers, "--shots", "2", "--seeds", "3", "--view-families", "flip", "--protocols",
                     "clean", "--out", out)
    assert again.returncode == 0, again.stderr
    extended = open_cache(out)
    new_picks = _fewshot_cli(split_file, 2, 3)
    added_train = sorted(set(new_picks["train"]) - set(train))
    added_val = sorted(set(new_picks["val"]) - val_before)
    assert f"encoded {len(added_train) + len(added_val)} images" in again.stdout and "(extended)" in again.stdout
    assert extended.rows("train").source.tolist() == sorted(set(train) | set(added_train))
    keep = np.searchsorted(extended.rows("train").source, np.array(train))
    assert torch.equal(extended.views("train", "plain", keep), plain_before)          # copied, not redone
    task, _ = build_fit_task(extended, shots=2, seeds=[3], families=("plain", "flip"))
    assert task.views == 2

    same = _extract(capsys, *flowers, "--shots", "2", "--seeds", "3", "--view-families", "flip", "--protocols",
                    "clean", "--out", out)
    assert same.returncode == 0 and "nothing to do" in same.stdout

    family = _extract(capsys, *flowers, "--shots", "2", "--seeds", "3", "--view-families", "semo-r0.8",
                      "--protocols", "clean", "--out", out)
    assert family.returncode == 0, family.stderr
    with_family = open_cache(out)
    assert list(with_family.families("train")) == ["plain", "flip", "semo-r0.8"]
    support = with_family.families("train")["semo-r0.8"].rows.size
    assert f"encoded {support} images ({support * 10} views)" in family.stdout      # only the new family
    assert torch.equal(with_family.views("train", "flip"), extended.views("train", "flip"))
