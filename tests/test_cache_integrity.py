"""Checksums (cache.integrity): a damaged cache is refused in one line naming the file, the dataset and the
command that rebuilds it; a cache written before checksums still opens."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from cache_factory import write_cache

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.integrity import CHECKSUM_ATTR, ROOT_ATTR, DamagedCacheError, dataset_checksum
from clipbridge.cache.reader import open_cache

EMBEDDING = "images/train/views/plain/embedding"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("integrity") / "fake.h5", families={"tip": 3}, pairs=[(2, 1)],
                       extract_args={"dataset": "fake", "model": "m", "pretrained": "p"})


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    return Path(shutil.copy(finished, tmp_path / "copy.h5"))


def _overwrite(path: Path, name: str, count: int = 256, value: int = 0x5A) -> None:
    """Overwrite `count` raw bytes inside a contiguous dataset's data, outside HDF5 (as a bad disk would)."""
    with h5py.File(path, "r") as handle:
        offset, size = handle[name].id.get_offset(), handle[name].id.get_storage_size()
    with open(path, "r+b") as raw:
        raw.seek(offset + max(0, size // 2 - count // 2))
        raw.write(bytes([value]) * min(count, size))


def _damaged_message(path: Path) -> str:
    with pytest.raises(DamagedCacheError) as info:
        open_cache(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_every_dataset_of_a_finished_cache_carries_its_checksum(finished):
    with h5py.File(finished, "r") as handle:
        assert handle.attrs[ROOT_ATTR] == "crc32"
        names = []
        handle.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert len(names) > 10
        for name in names:
            assert handle[name].attrs[CHECKSUM_ATTR] == dataset_checksum(handle[name])


def test_overwritten_embedding_bytes_are_refused_naming_the_dataset_and_the_rebuild(copy):
    _overwrite(copy, EMBEDDING)
    message = _damaged_message(copy)
    assert f"damaged cache: /{EMBEDDING} does not match its checksum" in message
    assert "delete it and rebuild it with `" in message and "extract --dataset fake --model m --pretrained p" in message
    assert f"--out {copy}" in message and "--shots 2 --seeds 1" in message


@pytest.mark.parametrize("name", ["classes/names", "text/coop/projected", "lists/train/label",
                                  "images/train/views/tip/embedding", "model/text_projection"])
def test_damage_in_any_dataset_is_refused(copy, name):
    _overwrite(copy, name, count=4, value=0x7F)
    message = _damaged_message(copy)
    assert f"/{name} " in message


def test_damaged_labels_are_reported_as_damage_not_as_bad_labels(copy):
    with h5py.File(copy, "r+") as handle:       # a value the validator refuses on its own
        handle["images/train/label"][0] = 99
    message = _damaged_message(copy)
    assert "/images/train/label does not match its checksum" in message


def test_zeroed_blocks_end_in_one_line_never_a_traceback(copy):
    data = copy.read_bytes()
    outcomes = set()
    # the superblock, root group and first object headers (zeroing some later blocks of this file makes
    # libhdf5 itself loop forever on open, out of this package's reach)
    for offset in range(0, 2560, 512):
        damaged = bytearray(data)
        damaged[offset:offset + 512] = bytes(512)
        copy.write_bytes(bytes(damaged))
        try:
            cache = open_cache(copy)
            for split in cache.splits:
                for family in cache.families(split):
                    cache.views(split, family)
            outcomes.add("opened")
        except ClipBridgeError as error:
            assert "\n" not in str(error) and str(copy) in str(error)
            outcomes.add("refused")
    assert "refused" in outcomes


def test_a_cache_written_before_checksums_still_opens(copy, finished):
    with h5py.File(copy, "r+") as handle:
        del handle.attrs[ROOT_ATTR]
        handle.visititems(lambda n, o: o.attrs.__delitem__(CHECKSUM_ATTR) if isinstance(o, h5py.Dataset) else None)
    old, new = open_cache(copy), open_cache(finished)
    assert np.array_equal(old.views("train", "tip").numpy(), new.views("train", "tip").numpy())
    assert old.family("train", "tip").recipe == new.family("train", "tip").recipe


def test_a_checked_cache_whose_dataset_lost_its_checksum_is_refused(copy):
    with h5py.File(copy, "r+") as handle:
        del handle[EMBEDDING].attrs[CHECKSUM_ATTR]
    assert f"/{EMBEDDING} has lost its checksum" in _damaged_message(copy)
