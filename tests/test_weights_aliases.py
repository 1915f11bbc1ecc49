"""Issue 20 item 9: the same weights extracted under two names (a tag that stands for a file, and the file) share
one cache folder, found by the SHA-256 the caches record; the other name is an alias. Caches of older folders
are still found and resumed where they are."""
from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import pytest

import clipbridge.extract.bundled  # noqa: F401  (registers the bundled tags)
from clipbridge.cache.locate import find_cache
from clipbridge.cache.reader import open_cache
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.cache.weights import (cache_folder, check_weights, register_tag_file, tag_sha256,
                                      weights_cache_path, weights_folder)
from clipbridge.errors import ClipBridgeError
from clipbridge.extract.bundled import BUNDLED_WEIGHTS, weights_sha256

MODEL = "toy-model"


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "files" / "toy-weights.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"toy weights")
    register_tag_file(MODEL, "toy", path)
    return path


def _cache(root: Path, folder: str, dataset: str, pretrained: str, sha256: str) -> Path:
    path = write_synthetic_cache(root / folder / f"{dataset}.h5", classes=2, train_per_class=2, dim=4, width=4,
                                 val=2, test=2, dataset=dataset)
    with h5py.File(path, "a") as handle:
        handle.attrs.update(model=MODEL, pretrained=pretrained, pretrained_sha256=sha256)
    return path


def test_a_bundled_tag_has_its_files_sha256():
    model, tags = next(iter(BUNDLED_WEIGHTS.items()))
    tag, path = next(iter(tags.items()))
    assert weights_sha256(model, tag) == hashlib.sha256(path.read_bytes()).hexdigest() == tag_sha256(model, tag)
    assert weights_sha256("ViT-B-16", "openai") == ""


def test_the_file_of_weights_extracted_under_a_tag_goes_into_the_tags_folder(tmp_path, weights):
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    _cache(tmp_path, f"{MODEL}--toy", "alpha", "toy", sha)
    assert weights_folder(tmp_path, MODEL, sha) == tmp_path / f"{MODEL}--toy"
    assert weights_cache_path(tmp_path, MODEL, str(weights), "beta") == tmp_path / f"{MODEL}--toy" / "beta.h5"
    assert weights_cache_path(tmp_path, MODEL, "other-tag", "beta") == tmp_path / f"{MODEL}--other-tag" / "beta.h5"


def test_the_tag_of_weights_extracted_as_a_file_goes_into_the_files_folder(tmp_path, weights):
    sha = tag_sha256(MODEL, "toy")
    folder = cache_folder(MODEL, str(weights))
    _cache(tmp_path, folder, "alpha", "toy-weights.safetensors", sha)
    assert weights_cache_path(tmp_path, MODEL, "toy", "beta", sha) == tmp_path / folder / "beta.h5"


def test_a_cache_in_its_own_older_folder_stays_there(tmp_path, weights):
    sha = tag_sha256(MODEL, "toy")
    _cache(tmp_path, cache_folder(MODEL, str(weights)), "alpha", "toy-weights.safetensors", sha)
    old = _cache(tmp_path, f"{MODEL}--toy", "beta", "toy", sha)                  # two folders, from before
    assert weights_cache_path(tmp_path, MODEL, "toy", "beta", sha) == old       # resumed where it is


def test_find_cache_matches_either_name_of_the_weights(tmp_path, weights):
    sha = tag_sha256(MODEL, "toy")
    path = _cache(tmp_path, cache_folder(MODEL, str(weights)), "alpha", "toy-weights.safetensors", sha)
    assert find_cache(tmp_path, dataset="alpha", model=MODEL, pretrained="toy", sha256=sha) == path
    assert find_cache(tmp_path, dataset="alpha", model=MODEL, pretrained=str(weights)) == path
    with pytest.raises(ClipBridgeError, match="no cache"):
        find_cache(tmp_path, dataset="alpha", model=MODEL, pretrained="other-tag")


def test_open_cache_accepts_an_alias_and_refuses_other_weights(tmp_path, weights):
    sha = tag_sha256(MODEL, "toy")
    path = _cache(tmp_path, cache_folder(MODEL, str(weights)), "alpha", "toy-weights.safetensors", sha)
    assert open_cache(path, pretrained="toy").path == path
    assert open_cache(path, pretrained=str(weights)).path == path
    with pytest.raises(ClipBridgeError, match="not the 'other-tag' asked for"):
        check_weights(path, {"model": MODEL, "pretrained": "toy-weights.safetensors", "pretrained_sha256": sha},
                      "other-tag")
