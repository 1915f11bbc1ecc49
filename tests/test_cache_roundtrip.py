"""The writer and reader agree: what CacheWriter stores, open_cache returns (shapes, values, order)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from clipbridge.cache.errors import ClipBridgeError
from clipbridge.cache.reader import open_cache
from clipbridge.cache.schema import FORMAT, VERSION, default_cache_path
from clipbridge.cache.schema import tmp_path as unfinished_path
from clipbridge.cache.writer import CacheWriter

W, D, C, V = 6, 4, 3, 2
ATTRS = {"model": "ViT-B-16", "pretrained": "openai", "dataset": "toy", "image_size": 224, "precision": "fp16",
         "split_source": "split_zhou_Toy.json"}


def _contents(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "projection": rng.standard_normal((W, D)).astype(np.float32),
        "ensemble_eos": rng.standard_normal((6, W)).astype(np.float32),
        "cupl_eos": rng.standard_normal((3, W)).astype(np.float32),
        "train": rng.standard_normal((7, V, D)).astype(np.float32) * 10,
        "test": rng.standard_normal((5, 1, D)).astype(np.float32) * 10,
    }


def write_cache(path: Path, data: dict, *, dtype=np.float32, skip_rows=(), overwrite=False) -> Path:
    """A small complete cache: 3 classes, text sets ensemble (6) and cupl (3), splits train and test."""
    with CacheWriter(path, attrs=ATTRS, overwrite=overwrite) as writer:
        writer.write_model(data["projection"], 100.0)
        writer.write_classes(["cat", "dog", "sea lion"], ["Cat", "Dog", "Sea_Lion"])
        for name, classes in (("ensemble", [0, 0, 1, 1, 2, 2]), ("cupl", [0, 1, 2])):
            eos = data[f"{name}_eos"]
            writer.write_text(name, [f"{name} {i}" for i in range(len(classes))], np.array(classes),
                              eos @ data["projection"], eos, attrs={"templates": ["a photo of a {}."]})
        for split in ("train", "test"):
            values = data[split]
            n = values.shape[0]
            writer.ensure_split(split, np.arange(n) % C, [f"{split}/{i}.jpg" for i in range(n)], values.shape[1],
                                D, dtype, {"recipe": "flip", "seed": 1})
            good = [row for row in range(n) if not (split == "train" and row in skip_rows)]
            writer.write_rows(split, good, values[good])
            if split == "train" and skip_rows:
                writer.mark_skipped(split, list(skip_rows), "unreadable image")
        return writer.finish()


def test_written_cache_reads_back_identical_arrays_and_metadata(tmp_path):
    data = _contents()
    path = write_cache(tmp_path / "c.h5", data)
    cache = open_cache(path, model="ViT-B-16", pretrained="openai")
    assert cache.classnames == ["cat", "dog", "sea lion"]
    assert cache.original_classnames == ["Cat", "Dog", "Sea_Lion"]
    assert torch.equal(cache.text_projection, torch.from_numpy(data["projection"]))
    assert cache.logit_scale == pytest.approx(100.0)
    assert cache.text_sets == ["ensemble", "cupl"]          # creation order, not alphabetical
    assert cache.splits == ["train", "test"]
    train = cache.split("train")
    assert train.embedding.dtype == torch.float32 and train.embedding.shape == (7, V, D)
    assert torch.equal(train.embedding, torch.from_numpy(data["train"]))
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert train.paths[3] == "train/3.jpg" and train.views == V
    attrs = cache.attrs
    assert attrs["format"] == FORMAT and attrs["version"] == VERSION and attrs["complete"] is True
    assert attrs["image_size"] == 224 and attrs["split_source"] == "split_zhou_Toy.json"
    assert attrs["torch_version"] and attrs["created"]


def test_text_of_several_sets_is_their_concatenation_in_the_order_asked(tmp_path):
    data = _contents()
    cache = open_cache(write_cache(tmp_path / "c.h5", data))
    both = cache.text(["cupl", "ensemble"])
    assert both.prompts[:3] == ["cupl 0", "cupl 1", "cupl 2"] and len(both.prompts) == 9
    assert both.classes.tolist() == [0, 1, 2, 0, 0, 1, 1, 2, 2]
    assert both.classes.dtype == torch.int64
    expected_eos = np.concatenate([data["cupl_eos"], data["ensemble_eos"]])
    assert torch.equal(both.eos, torch.from_numpy(expected_eos))
    assert torch.allclose(both.projected, both.eos @ cache.text_projection, atol=1e-5)


def test_skipped_rows_are_excluded_on_read_and_counted(tmp_path):
    data = _contents()
    data["train"][4] = np.nan          # never written: the row is skipped
    cache = open_cache(write_cache(tmp_path / "c.h5", data, skip_rows=(4,)))
    train = cache.split("train")
    assert train.embedding.shape[0] == 6
    assert train.paths == [f"train/{i}.jpg" for i in (0, 1, 2, 3, 5, 6)]
    assert torch.equal(train.embedding[4], torch.from_numpy(data["train"][5]))
    assert cache.split_counts() == {"train": 6, "test": 5}
    with h5py.File(cache.path) as handle:
        assert handle["images/train/done"].attrs["skipped_count"] == 1
        assert "unreadable image" in handle["images/train/done"].attrs["skipped_log"]


def test_float16_embeddings_come_back_as_float32(tmp_path):
    data = _contents()
    cache = open_cache(write_cache(tmp_path / "c.h5", data, dtype=np.float16))
    test = cache.split("test")
    assert test.embedding.dtype == torch.float32
    assert torch.equal(test.embedding, torch.from_numpy(data["test"].astype(np.float16).astype(np.float32)))


def test_rows_written_out_of_order_land_at_their_indices(tmp_path):
    data = _contents()
    path = tmp_path / "c.h5"
    with CacheWriter(path, attrs=ATTRS) as writer:
        writer.write_model(data["projection"], 100.0)
        writer.write_classes(["a", "b", "c"])
        writer.write_text("ensemble", ["x"] * 3, np.arange(3), np.ones((3, D)), np.ones((3, W)))
        writer.ensure_split("train", np.arange(7) % C, [str(i) for i in range(7)], V, D, np.float32)
        for rows in ([5, 1, 6], [0, 3], [2, 4]):
            writer.write_rows("train", rows, data["train"][rows])
        writer.finish()
    assert torch.equal(open_cache(path).split("train").embedding, torch.from_numpy(data["train"]))


def test_finish_leaves_only_the_final_file_and_cache_id_is_stable(tmp_path):
    path = write_cache(tmp_path / "sub" / "dir" / "c.h5", _contents())
    assert path.is_file() and not tmp_path.joinpath("sub", "dir", "c.h5.tmp").exists()
    first = open_cache(path).cache_id
    moved = path.rename(tmp_path / "moved.h5")
    assert open_cache(moved).cache_id == first and len(first) == 12
    other = write_cache(tmp_path / "other.h5", _contents())
    assert open_cache(other).cache_id != first


def test_finish_refuses_while_rows_are_missing_and_keeps_the_tmp(tmp_path):
    path = tmp_path / "c.h5"
    data = _contents()
    writer = CacheWriter(path, attrs=ATTRS)
    writer.write_model(data["projection"], 100.0)
    writer.write_classes(["a", "b", "c"])
    writer.write_text("ensemble", ["x"] * 3, np.arange(3), np.ones((3, D)), np.ones((3, W)))
    writer.ensure_split("train", np.arange(7) % C, [str(i) for i in range(7)], V, D, np.float32)
    writer.write_rows("train", [0, 1], data["train"][:2])
    with pytest.raises(ClipBridgeError, match=r"c\.h5\.tmp.*'train' has 2/7 rows done"):
        writer.finish()
    writer.close()
    assert unfinished_path(path).exists() and not path.exists()


def test_writer_rejects_inconsistent_inputs_with_the_location(tmp_path):
    data = _contents()
    with CacheWriter(tmp_path / "c.h5", attrs=ATTRS) as writer:
        writer.write_model(data["projection"], 100.0)
        writer.write_classes(["a", "b", "c"])
        with pytest.raises(ClipBridgeError, match=r"text/ensemble.*text_projection \[6, 4\]"):
            writer.write_text("ensemble", ["x"], np.array([0]), np.ones((1, D + 1)), np.ones((1, W)))
        with pytest.raises(ClipBridgeError, match=r"class indices must lie in \[0, 3\)"):
            writer.write_text("ensemble", ["x"], np.array([3]), np.ones((1, D)), np.ones((1, W)))
        writer.ensure_split("train", np.arange(7) % C, [str(i) for i in range(7)], V, D, np.float32)
        bad = data["train"][:2].copy()
        bad[1, 0, 0] = np.inf
        with pytest.raises(ClipBridgeError, match=r"images/train.*row 1"):
            writer.write_rows("train", [0, 1], bad)
        with pytest.raises(ClipBridgeError, match=r"must be \[2, 2, 4\]"):
            writer.write_rows("train", [0, 1], data["train"][:2, :1])
        with pytest.raises(ClipBridgeError, match=r"repeat"):
            writer.write_rows("train", [0, 0], data["train"][:2])
        assert not writer.done("train").any()


def test_existing_cache_is_not_overwritten_unless_asked(tmp_path):
    path = write_cache(tmp_path / "c.h5", _contents(0))
    with pytest.raises(ClipBridgeError, match=r"c\.h5 already exists.*--overwrite"):
        CacheWriter(path, attrs=ATTRS)
    replacement = _contents(1)
    write_cache(path, replacement, overwrite=True)
    assert torch.equal(open_cache(path).text_projection, torch.from_numpy(replacement["projection"]))


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ClipBridgeError, match=r"file/c\.h5\.tmp: cannot write the cache here"):
        CacheWriter(blocker / "c.h5", attrs=ATTRS)


def test_default_cache_path_uses_model_and_pretrained_tag_or_file_stem():
    assert default_cache_path("ViT-B-16", "openai", "food101") == Path("cache/ViT-B-16--openai/food101.h5")
    assert default_cache_path("clipbridge-tiny", "/w/weights/tiny.pt", "shapes", root="/x") == \
        Path("/x/clipbridge-tiny--tiny/shapes.h5")
    assert default_cache_path("hf-hub:org/model", "", "d").parent.name == "hf-hub_org_model--unnamed"


def test_finish_refuses_splits_whose_size_disagrees_with_the_model_written_later(tmp_path):
    with CacheWriter(tmp_path / "c.h5", attrs=ATTRS) as writer:
        writer.write_classes(["a", "b", "c"])
        writer.ensure_split("train", np.arange(3), ["0", "1", "2"], 1, D + 1, np.float32)
        writer.write_rows("train", [0, 1, 2], np.ones((3, 1, D + 1)))
        writer.write_model(np.ones((W, D), np.float32), 100.0)
        writer.write_text("ensemble", ["x"] * 3, np.arange(3), np.ones((3, D)), np.ones((3, W)))
        with pytest.raises(ClipBridgeError, match=r"images/train: embedding dim 5 differs from text_projection D 4"):
            writer.finish()
