"""Finding the cache a command means: the only cache under the root, the only model holding a dataset, or
one line listing the candidates; weights identified by their content."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cache_factory import write_cache
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.locate import find_cache
from clipbridge.evaluate.commands.main import fit


@pytest.fixture(scope="module")
def one_cache(tmp_path_factory) -> Path:
    source = write_cache(tmp_path_factory.mktemp("src") / "c.h5", train_counts=(6, 6, 6))
    root = tmp_path_factory.mktemp("root")
    (root / "ViT-B-16--openai").mkdir()
    shutil.copy(source, root / "ViT-B-16--openai" / "dtd.h5")
    return root


def test_the_only_cache_under_the_root_needs_no_name(one_cache):
    assert find_cache(one_cache) == one_cache / "ViT-B-16--openai" / "dtd.h5"
    assert find_cache(one_cache, dataset="dtd") == find_cache(one_cache, model="ViT-B-16", pretrained="openai")


def test_a_dataset_held_by_two_models_is_one_line_listing_both(one_cache, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(one_cache, root)
    (root / "RN50--openai").mkdir()
    shutil.copy(root / "ViT-B-16--openai" / "dtd.h5", root / "RN50--openai" / "dtd.h5")
    with pytest.raises(ClipBridgeError) as info:
        find_cache(root, dataset="dtd")
    message = str(info.value)
    assert "\n" not in message and "2 caches" in message
    assert "RN50--openai/dtd.h5" in message and "ViT-B-16--openai/dtd.h5" in message
    assert find_cache(root, dataset="dtd", model="RN50") == root / "RN50--openai" / "dtd.h5"
    with pytest.raises(ClipBridgeError, match=r"no cache for dataset food101 under .*; run `clipbridge extract "
                                              r"--dataset food101` first"):
        find_cache(root, dataset="food101")


def test_fit_with_no_dataset_uses_the_only_cache(one_cache, tmp_path):
    result = CliRunner().invoke(fit, ["--cache-root", str(one_cache), "--method", "zeroshot", "--shots", "2",
                                      "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "fit zeroshot on fake" in result.output


def test_a_checkpoint_is_found_by_its_content_not_its_name(one_cache, tmp_path):
    import hashlib

    checkpoint = tmp_path / "run2" / "epoch_latest.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"run 2 weights")
    folder = f"clip--epoch_latest-{hashlib.sha256(b'run 2 weights').hexdigest()[:8]}"
    (one_cache.parent / "hashed").mkdir()
    target = one_cache.parent / "hashed" / folder
    target.mkdir()
    shutil.copy(one_cache / "ViT-B-16--openai" / "dtd.h5", target / "dtd.h5")
    assert find_cache(one_cache.parent / "hashed", pretrained=str(checkpoint)) == target / "dtd.h5"
    other = tmp_path / "run3" / "epoch_latest.pt"
    other.parent.mkdir()
    other.write_bytes(b"run 3 weights")
    with pytest.raises(ClipBridgeError, match="no cache for pretrained"):
        find_cache(one_cache.parent / "hashed", pretrained=str(other))
