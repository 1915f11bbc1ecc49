"""evaluate.fitting.runs: a saved run round-trips, is replaced atomically, and leaves no temporary folder."""
from __future__ import annotations

import pytest
import torch

from clipbridge.bridge.registry import FittedState
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.fitting.runs import format_seeds, load_run, run_dir_name, save_run

META = {"dataset": "d", "model": "m", "pretrained": "p", "cache": "c.h5", "cache_id": "id1", "shots": 4,
        "seeds": [1, 2, 3], "views": 1, "prompt_sets": ["ensemble"], "protocol": "clean", "device": "cpu",
        "dtype": "float32", "val_is_test": False}


def _state(value=1.0):
    return FittedState("zeroshot", {"text": torch.full((2, 3), value)}, [{"a": 1}] * 3,
                       {"val_accuracy": [1.0, 2.0, 3.0], "fit_seconds": 0.5, "search_seconds": 0.0})


def test_saved_run_loads_back_with_tensors_hparams_info_and_meta(tmp_path):
    path = save_run(tmp_path, _state(), META, {"alpha": 2})
    assert path.parent == tmp_path / "d" / "zeroshot" and path.name.startswith("shots4-seeds1-3-")
    state, meta, overrides = load_run(path)
    assert torch.equal(state.tensors["text"], torch.ones(2, 3)) and state.hparams[0] == {"a": 1}
    assert state.info["val_accuracy"] == [1.0, 2.0, 3.0] and meta == META and overrides == {"alpha": 2}


def test_saving_the_same_run_again_replaces_it_and_leaves_no_temporary_folders(tmp_path):
    first = save_run(tmp_path, _state(1.0), META)
    second = save_run(tmp_path, _state(5.0), META)
    assert first == second
    assert torch.equal(load_run(second)[0].tensors["text"], torch.full((2, 3), 5.0))
    assert [p.name for p in second.parent.iterdir()] == [second.name]


def test_run_name_changes_with_what_defines_the_run():
    base = run_dir_name(META, "zeroshot", {})
    assert base != run_dir_name({**META, "protocol": "paper"}, "zeroshot", {})
    assert base != run_dir_name(META, "zeroshot", {"alpha": 1})
    assert format_seeds([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"


def test_loading_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(ClipBridgeError, match="is not a saved run"):
        load_run(tmp_path)


def test_a_saved_run_folder_has_ordinary_permissions(tmp_path):
    import os
    import stat

    from clipbridge.bridge.registry import FittedState

    state = FittedState("zeroshot", {"text": __import__("torch").zeros(2, 3)}, [{}], {})
    meta = {"dataset": "d", "cache_id": "x", "shots": 1, "seeds": [1], "view_families": ["plain"],
            "prompt_sets": ["coop"], "protocol": "clean", "dtype": "float32"}
    old = os.umask(0o022)
    try:
        folder = save_run(tmp_path, state, meta)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
