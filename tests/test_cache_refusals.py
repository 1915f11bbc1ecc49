"""open_cache refuses every file it could not trust, with one message that names the file and the problem."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.integrity import stamp
from clipbridge.cache.reader import open_cache
from clipbridge.cache.synthetic import write_synthetic_cache


@pytest.fixture(scope="module")
def valid_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("valid") / "valid.h5"
    return write_synthetic_cache(path, classes=4, train_per_class=2, dim=8, width=6, val=8, test=12, families={"flip": 1})


@pytest.fixture
def cache_copy(valid_cache, tmp_path) -> Path:
    """A fresh copy of a valid cache for a test to break."""
    return Path(shutil.copy(valid_cache, tmp_path / "broken.h5"))


def _refused(path: Path, pattern: str, **kwargs) -> None:
    with pytest.raises(ClipBridgeError, match=pattern) as info:
        open_cache(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def _edit(path: Path, edit) -> None:
    """Change a cache as a faulty writer would have written it: the checksums are stamped again after the
    edit, so the refusal tested is the validator's own, not the checksum's (tests/test_cache_integrity.py)."""
    with h5py.File(path, "r+") as handle:
        edit(handle)
        stamp(handle)


def _replace(handle: h5py.File, name: str, data) -> None:
    del handle[name]
    handle.create_dataset(name, data=data)


def test_the_valid_cache_opens(valid_cache):
    cache = open_cache(valid_cache, model="synthetic", pretrained="seed0")
    assert cache.splits == ["train", "val", "test"] and cache.text_sets == ["coop", "ensemble", "cupl"]


def test_missing_file_is_refused(tmp_path):
    _refused(tmp_path / "absent.h5", r"no such cache file")


def test_a_file_with_only_its_tmp_is_reported_incomplete(cache_copy):
    cache_copy.rename(cache_copy.with_name("broken.h5.tmp"))
    _refused(cache_copy, r"incomplete \(only broken\.h5\.tmp exists")


def test_a_non_hdf5_file_is_refused(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("just text")
    _refused(path, r"not an HDF5 file")


def test_an_hdf5_file_of_another_format_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "someone-else"
    _refused(path, r"not a clipbridge cache \(format attribute is 'someone-else'")


def test_another_format_version_is_refused(cache_copy):
    _edit(cache_copy, lambda h: h.attrs.__setitem__("version", 3))
    _refused(cache_copy, r"version 3 is not supported \(this clipbridge reads versions 1, 2\)")


def test_a_cache_not_marked_complete_is_refused(cache_copy):
    _edit(cache_copy, lambda h: h.attrs.__setitem__("complete", False))
    _refused(cache_copy, r"the cache is incomplete")


def test_a_family_with_rows_not_done_is_refused(cache_copy):
    def undo(handle):
        handle["images/train/views/flip/done"][3] = False
    _edit(cache_copy, undo)
    _refused(cache_copy, r"view family 'flip' of split 'train' is incomplete: 7/8 rows done")


def test_eos_width_not_matching_text_projection_is_refused(cache_copy):
    _edit(cache_copy, lambda h: _replace(h, "text/ensemble/eos", np.zeros((12, 7), np.float32)))
    _refused(cache_copy, r"text set 'ensemble' shapes disagree.*eos \(12, 7\).*text_projection \[6, 8\]")


def test_embedding_size_not_matching_text_projection_is_refused(cache_copy):
    _edit(cache_copy, lambda h: _replace(h, "images/test/views/plain/embedding", np.zeros((12, 1, 9), np.float32)))
    _refused(cache_copy, r"view family 'plain' of split 'test' is \(12, 1, 9\) for 12 rows, expected \[12, E, 8\]")


def test_a_row_table_whose_parts_disagree_is_refused(cache_copy):
    _edit(cache_copy, lambda h: _replace(h, "images/test/label", np.zeros(11, np.int32)))
    _refused(cache_copy, r"split 'test' row table disagrees: source \(12,\), label \(11,\)")


def test_labels_outside_the_classes_are_refused(cache_copy):
    def relabel(handle):
        _replace(handle, "images/train/label", np.full(8, 4, np.int32))
        _replace(handle, "lists/train/label", np.full(8, 4, np.int32))
    _edit(cache_copy, relabel)
    _refused(cache_copy, r"split 'train' list has labels outside \[0, 4\)")


def test_rows_that_disagree_with_the_whole_list_are_refused(cache_copy):
    _edit(cache_copy, lambda h: _replace(h, "lists/train/label", (h["lists/train/label"][()] + 1) % 4))
    _refused(cache_copy, r"split 'train' labels differ from its whole list's labels")


def test_a_nan_image_row_is_refused_naming_split_family_and_row(cache_copy):
    def poison(handle):
        handle["images/test/views/plain/embedding"][7, 0, 3] = np.nan
    _edit(cache_copy, poison)
    _refused(cache_copy, r"view family 'plain' of split 'test' has NaN/Inf values in row 7$")


def test_an_inf_text_row_is_refused_naming_the_set_and_row(cache_copy):
    def poison(handle):
        handle["text/cupl/eos"][5, 1] = np.inf
    _edit(cache_copy, poison)
    _refused(cache_copy, r"text set 'cupl' /eos has NaN/Inf values in row 5")


def test_a_cache_of_another_model_is_refused(valid_cache):
    _refused(valid_cache, r"holds model 'synthetic', not the 'ViT-B-16' asked for", model="ViT-B-16")


def test_a_cache_of_other_pretrained_weights_is_refused(valid_cache):
    _refused(valid_cache, r"holds pretrained 'seed0', not the 'openai' asked for", pretrained="openai")


def test_a_checkpoint_file_must_be_the_one_the_cache_was_extracted_with(cache_copy, tmp_path):
    """Same file name, other content (open_clip writes epoch_latest.pt in every run): refused, naming both."""
    import hashlib

    mine, other = tmp_path / "run1" / "epoch_latest.pt", tmp_path / "run2" / "epoch_latest.pt"
    for path, content in ((mine, b"run 1"), (other, b"run 2")):
        path.parent.mkdir()
        path.write_bytes(content)

    def record(handle):
        handle.attrs["pretrained"] = "epoch_latest.pt"
        handle.attrs["pretrained_sha256"] = hashlib.sha256(b"run 1").hexdigest()
    _edit(cache_copy, record)
    assert open_cache(cache_copy, pretrained=str(mine)).attrs["pretrained"] == "epoch_latest.pt"
    _refused(cache_copy, r"extracted with weights epoch_latest\.pt \(sha256 [0-9a-f]{12}\), not .*run2/epoch_latest\.pt "
                         r"\(sha256 [0-9a-f]{12}\)", pretrained=str(other))


def test_unknown_text_sets_and_splits_list_the_known_ones(valid_cache):
    cache = open_cache(valid_cache)
    with pytest.raises(ClipBridgeError, match=r"valid\.h5: unknown text set 'clip'; known: coop, ensemble, cupl"):
        cache.text(["ensemble", "clip"])
    with pytest.raises(ClipBridgeError, match=r"valid\.h5: unknown split 'dev'; known: train, val, test"):
        cache.rows("dev")
