"""The writer and reader agree: what CacheWriter stores, open_cache returns (rows, families, values, order);
caches of format version 1 still open."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.reader import open_cache
from clipbridge.cache.schema import FORMAT, VERSION, default_cache_path, list_fingerprint
from clipbridge.cache.schema import tmp_path as unfinished_path
from clipbridge.cache.writer import CacheWriter

W, D, C = 6, 4, 3
ATTRS = {"model": "ViT-B-16", "pretrained": "openai", "dataset": "toy", "image_size": 224, "precision": "fp16",
         "split_source": "split_zhou_Toy.json"}
TRAIN_LIST = np.arange(10) % C                    # the whole train list: 10 images
STORED = np.array([0, 2, 3, 5, 6, 7, 9])          # the images the cache holds (a sampled coverage)
AUGMENTED = np.array([0, 1, 3, 4])                # rows (of STORED) that also get the 3-copy family "tip"


def _contents(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "projection": rng.standard_normal((W, D)).astype(np.float32),
        "ensemble_eos": rng.standard_normal((6, W)).astype(np.float32),
        "cupl_eos": rng.standard_normal((3, W)).astype(np.float32),
        "plain": rng.standard_normal((STORED.size, 1, D)).astype(np.float32) * 10,
        "tip": rng.standard_normal((AUGMENTED.size, 3, D)).astype(np.float32) * 10,
        "test": rng.standard_normal((5, 1, D)).astype(np.float32) * 10,
    }


def _header(writer: CacheWriter, data: dict) -> None:
    writer.write_model(data["projection"], 100.0)
    writer.write_classes(["cat", "dog", "sea lion"], ["Cat", "Dog", "Sea_Lion"])
    for name, classes in (("ensemble", [0, 0, 1, 1, 2, 2]), ("cupl", [0, 1, 2])):
        eos = data[f"{name}_eos"]
        writer.write_text(name, [f"{name} {i}" for i in range(len(classes))], np.array(classes),
                          eos @ data["projection"], eos, attrs={"templates": ["a photo of a {}."]})


def _start_train(writer: CacheWriter) -> None:
    names = [f"train/{i}.jpg" for i in range(TRAIN_LIST.size)]
    writer.write_list("train", TRAIN_LIST, list_fingerprint(names, TRAIN_LIST))
    writer.ensure_split("train", source=STORED, labels=TRAIN_LIST[STORED], paths=[names[i] for i in STORED])


def write_cache(path: Path, data: dict, *, dtype=np.float32, skip_rows=(), overwrite=False) -> Path:
    """A small complete cache: 3 classes, text sets ensemble (6) and cupl (3); train holds 7 of its 10 images
    (plain for all, "tip" x3 for 4 of them), test all 5 (plain)."""
    with CacheWriter(path, attrs=ATTRS, overwrite=overwrite) as writer:
        _header(writer, data)
        _start_train(writer)
        good = [row for row in range(STORED.size) if row not in skip_rows]
        writer.ensure_family("train", "plain", rows=np.arange(STORED.size), copies=1, dim=D, dtype=dtype,
                             recipe={"family": "plain"})
        writer.write_views("train", "plain", good, data["plain"][good])
        writer.ensure_family("train", "tip", rows=AUGMENTED, copies=3, dim=D, dtype=dtype, recipe={"seed": 1})
        tip_good = [i for i, row in enumerate(AUGMENTED) if row not in skip_rows]
        writer.write_views("train", "tip", tip_good, data["tip"][tip_good])
        if skip_rows:
            writer.mark_skipped("train", list(skip_rows), "unreadable image")
        test_labels = np.arange(5) % C
        writer.write_list("test", test_labels, "x")
        writer.ensure_split("test", source=np.arange(5), labels=test_labels, paths=[f"test/{i}" for i in range(5)])
        writer.write_family("test", "plain", data["test"], dtype=dtype)
        writer.set_attrs(coverage={"train": "sampled", "pairs": [[1, 1]], "val": "all"})
        return writer.finish()


def test_written_cache_reads_back_rows_families_and_values(tmp_path):
    data = _contents()
    cache = open_cache(write_cache(tmp_path / "c.h5", data), model="ViT-B-16", pretrained="openai")
    assert cache.classnames == ["cat", "dog", "sea lion"]
    assert cache.original_classnames == ["Cat", "Dog", "Sea_Lion"]
    assert torch.equal(cache.text_projection, torch.from_numpy(data["projection"]))
    assert cache.logit_scale == pytest.approx(100.0)
    assert cache.text_sets == ["ensemble", "cupl"]          # creation order, not alphabetical
    assert cache.splits == ["train", "test"]
    rows = cache.rows("train")
    assert rows.source.tolist() == STORED.tolist() and rows.labels.tolist() == TRAIN_LIST[STORED].tolist()
    assert rows.paths[1] == "train/2.jpg" and not rows.skipped.any()
    assert cache.list_labels("train").tolist() == TRAIN_LIST.tolist()
    families = cache.families("train")
    assert list(families) == ["plain", "tip"] and families["tip"].copies == 3
    assert families["tip"].rows.tolist() == AUGMENTED.tolist() and families["tip"].nbytes == 4 * 3 * D * 4
    plain = cache.views("train", "plain")
    assert plain.dtype == torch.float32 and torch.equal(plain, torch.from_numpy(data["plain"]))
    picked = cache.views("train", "tip", np.array([4, 0, 4]))          # any order, repeats allowed
    assert torch.equal(picked, torch.from_numpy(data["tip"][[3, 0, 3]]))
    assert cache.coverage.covers(1, 1) and not cache.coverage.covers(2, 1)
    attrs = cache.attrs
    assert attrs["format"] == FORMAT and attrs["version"] == VERSION and attrs["complete"] is True
    assert attrs["image_size"] == 224 and attrs["split_source"] == "split_zhou_Toy.json"
    assert attrs["torch_version"] and attrs["created"]


def test_a_row_without_the_family_asked_for_is_refused(tmp_path):
    cache = open_cache(write_cache(tmp_path / "c.h5", _contents()))
    with pytest.raises(ClipBridgeError, match=r"row 2 of split 'train' has no 'tip' views"):
        cache.views("train", "tip", np.array([0, 2]))
    with pytest.raises(ClipBridgeError, match=r"holds no view family 'flip' \(it has plain, tip\)"):
        cache.views("train", "flip")


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


def test_skipped_rows_are_marked_left_out_of_plain_and_counted(tmp_path):
    data = _contents()
    data["plain"][3] = np.nan          # never written: the image is skipped
    cache = open_cache(write_cache(tmp_path / "c.h5", data, skip_rows=(3,)))
    assert cache.rows("train").skipped.tolist() == [False, False, False, True, False, False, False]
    queries, labels, paths = cache.plain("train")
    assert queries.shape == (6, D) and paths == [f"train/{i}.jpg" for i in (0, 2, 3, 6, 7, 9)]
    assert torch.equal(queries[3], torch.from_numpy(data["plain"][4, 0]))
    assert cache.split_counts() == {"train": 6, "test": 5}
    with h5py.File(cache.path) as handle:
        assert handle["images/train/skipped"].attrs["count"] == 1
        assert "unreadable image" in handle["images/train/skipped"].attrs["log"]


def test_float16_embeddings_come_back_as_float32(tmp_path):
    data = _contents()
    cache = open_cache(write_cache(tmp_path / "c.h5", data, dtype=np.float16))
    test, _, _ = cache.plain("test")
    assert test.dtype == torch.float32
    assert torch.equal(test, torch.from_numpy(data["test"][:, 0].astype(np.float16).astype(np.float32)))


def test_rows_written_out_of_order_land_at_their_positions(tmp_path):
    data = _contents()
    path = tmp_path / "c.h5"
    with CacheWriter(path, attrs=ATTRS) as writer:
        _header(writer, data)
        _start_train(writer)
        writer.ensure_family("train", "plain", rows=np.arange(STORED.size), copies=1, dim=D, dtype=np.float32)
        for rows in ([5, 1, 6], [0, 3], [2, 4]):
            writer.write_views("train", "plain", rows, data["plain"][rows])
        writer.finish()
    assert torch.equal(open_cache(path).views("train", "plain"), torch.from_numpy(data["plain"]))


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
    _header(writer, data)
    _start_train(writer)
    writer.ensure_family("train", "plain", rows=np.arange(STORED.size), copies=1, dim=D, dtype=np.float32)
    writer.write_views("train", "plain", [0, 1], data["plain"][:2])
    with pytest.raises(ClipBridgeError, match=r"c\.h5\.tmp.*view family 'plain' of split 'train' has 2/7 rows"):
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
        names = [f"train/{i}.jpg" for i in range(TRAIN_LIST.size)]
        writer.write_list("train", TRAIN_LIST, list_fingerprint(names, TRAIN_LIST))
        with pytest.raises(ClipBridgeError, match=r"rows do not match the split's whole list"):
            writer.ensure_split("train", source=STORED, labels=(TRAIN_LIST[STORED] + 1) % C,
                                paths=[str(i) for i in STORED])
        with pytest.raises(ClipBridgeError, match=r"source indices must be sorted"):
            writer.ensure_split("train", source=STORED[::-1], labels=TRAIN_LIST[STORED[::-1]],
                                paths=[str(i) for i in STORED])
        _start_train(writer)
        with pytest.raises(ClipBridgeError, match=r"rows must be sorted, unique indices in \[0, 7\)"):
            writer.ensure_family("train", "tip", rows=np.array([0, 7]), copies=3, dim=D)
        writer.ensure_family("train", "plain", rows=np.arange(7), copies=1, dim=D, dtype=np.float32)
        bad = data["plain"][:2].copy()
        bad[1, 0, 0] = np.inf
        with pytest.raises(ClipBridgeError, match=r"views/plain.*row 1 \(train/2\.jpg\)"):
            writer.write_views("train", "plain", [0, 1], bad)
        with pytest.raises(ClipBridgeError, match=r"must be \[2, 1, 4\]"):
            writer.write_views("train", "plain", [0, 1], data["tip"][:2])
        with pytest.raises(ClipBridgeError, match=r"repeat"):
            writer.write_views("train", "plain", [0, 0], data["plain"][:2])
        assert not writer.done("train", "plain").any()


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


def test_default_cache_path_keeps_tags_readable_and_keys_files_by_their_content(tmp_path):
    import hashlib

    assert default_cache_path("ViT-B-16", "openai", "food101") == Path("cache/ViT-B-16--openai/food101.h5")
    first, second = tmp_path / "run1" / "epoch_latest.pt", tmp_path / "run2" / "epoch_latest.pt"
    for path, content in ((first, b"weights of run 1"), (second, b"weights of run 2")):
        path.parent.mkdir()
        path.write_bytes(content)
    short = hashlib.sha256(b"weights of run 1").hexdigest()[:8]
    assert default_cache_path("ViT-B-16", str(first), "dtd", root="/x") == \
        Path(f"/x/ViT-B-16--epoch_latest-{short}/dtd.h5")
    assert default_cache_path("ViT-B-16", str(first), "dtd") != default_cache_path("ViT-B-16", str(second), "dtd")
    assert default_cache_path("hf-hub:org/model", "random", "d").parent.name == "hf-hub_org_model--random"
    with pytest.raises(ClipBridgeError, match="checkpoint file not found"):
        default_cache_path("ViT-B-16", str(tmp_path / "absent.pt"), "dtd")


def test_finish_refuses_families_whose_size_disagrees_with_the_model_written_later(tmp_path):
    with CacheWriter(tmp_path / "c.h5", attrs=ATTRS) as writer:
        writer.write_classes(["a", "b", "c"])
        writer.write_list("train", np.arange(3), "x")
        writer.ensure_split("train", source=np.arange(3), labels=np.arange(3), paths=["0", "1", "2"])
        writer.write_family("train", "plain", np.ones((3, 1, D + 1)))
        writer.write_model(np.ones((W, D), np.float32), 100.0)
        writer.write_text("ensemble", ["x"] * 3, np.arange(3), np.ones((3, D)), np.ones((3, W)))
        with pytest.raises(ClipBridgeError, match=r"views/plain: embedding dim 5 differs from text_projection D 4"):
            writer.finish()


def write_version1_cache(path: Path, embedding: np.ndarray, labels: np.ndarray, skipped: np.ndarray) -> Path:
    """A cache exactly as clipbridge 0.1's writer laid it out (format version 1): one split `train` with
    embedding [N, V, D] (view 0 plain, 1 flip, 2.. crops), `done`, `skipped`, and a test split."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": FORMAT, "version": 1, "model": "m", "pretrained": "p", "dataset": "old",
                        "complete": True, "created": "2026-11-30T00:00:00+00:00", "uuid": "u"})
        f["model/text_projection"] = np.eye(W, D, dtype=np.float32)
        f["model/logit_scale"] = np.float32(100.0)
        f.create_dataset("classes/names", data=np.array(["a", "b", "c"], dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("text/ensemble/prompt", data=np.array(["x", "y", "z"], dtype=object),
                         dtype=h5py.string_dtype())
        f["text/ensemble/class"] = np.arange(3, dtype=np.int32)
        f["text/ensemble/eos"] = np.eye(3, W, dtype=np.float32)
        f["text/ensemble/projected"] = np.eye(3, W, dtype=np.float32) @ np.eye(W, D, dtype=np.float32)
        for split, values, skip in (("train", embedding, skipped), ("test", np.nan_to_num(embedding[:, :1]), np.zeros(len(labels), bool))):
            g = f.create_group(f"images/{split}")
            g["embedding"] = values.astype(np.float16)
            g["label"] = labels.astype(np.int32)
            g.create_dataset("path", data=np.array([f"{split}/{i}" for i in range(len(labels))], dtype=object),
                             dtype=h5py.string_dtype())
            g["done"] = np.ones(len(labels), bool)
            g["done"].attrs.update({"views": values.shape[1], "seed": 0, "views_recipe": "v1"})
            g["skipped"] = skip
    return path


def test_a_version_1_cache_opens_with_its_views_as_plain_flip_and_legacy_crops(tmp_path):
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((6, 4, D)).astype(np.float16).astype(np.float32)
    labels = np.arange(6) % C
    skipped = np.array([False, False, True, False, False, False])
    embedding[2] = np.nan                                      # an unreadable row is never checked
    cache = open_cache(write_version1_cache(tmp_path / "v1.h5", embedding, labels, skipped))
    assert cache.version == 1 and cache.coverage.is_everything
    assert list(cache.families("train")) == ["plain", "flip", "legacy-crops"]
    assert cache.families("train")["legacy-crops"].copies == 2 and list(cache.families("test")) == ["plain"]
    kept = np.flatnonzero(~skipped)
    assert cache.list_labels("train").tolist() == labels[kept].tolist()      # the sampler saw readable rows
    assert torch.equal(cache.views("train", "plain")[:, 0], torch.from_numpy(embedding[kept, 0]))
    assert torch.equal(cache.views("train", "flip", np.array([1]))[0, 0], torch.from_numpy(embedding[1, 1]))
    assert torch.equal(cache.views("train", "legacy-crops", np.array([2]))[0], torch.from_numpy(embedding[3, 2:]))
    assert cache.rows("train").paths[2] == "train/3"
