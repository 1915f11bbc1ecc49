"""Unknown or absent devices are refused in one line listing the devices this machine has."""
from __future__ import annotations

import pytest
import torch

import clipbridge.cli as cli
from clipbridge.bridge.devices import available_devices, resolve_device
from clipbridge.bridge.errors import BridgeInputError


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert available_devices()[:2] == ["auto", "cpu"]


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:99", "cpu:x"])
def test_unknown_devices_name_the_ones_this_machine_has(name):
    with pytest.raises(BridgeInputError) as info:
        resolve_device(name)
    assert str(info.value) == f"--device {name!r}: this machine has {', '.join(available_devices())}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(BridgeInputError, match="this machine has auto, cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("command", [["fit", "--dataset", "shapes"], ["extract", "--dataset", "shapes"]])
def test_fit_and_extract_refuse_tpu_in_one_line(command, tmp_path, capsys, monkeypatch):
    from clipbridge.cache.synthetic import write_synthetic_cache

    monkeypatch.chdir(tmp_path)
    if command[0] == "fit":
        path = write_synthetic_cache(tmp_path / "c.h5", classes=3, train_per_class=2, dim=8, width=6, val=6, test=6)
        command = ["fit", "--cache", str(path)]
    code = cli.main([*command, "--device", "tpu", "--cache-root", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: --device 'tpu': this machine has auto, cpu")
