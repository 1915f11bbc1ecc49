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


def test_cuda_without_a_gpu_is_refused():
    if torch.cuda.is_available():                  # asked when the test runs: --fake-cuda imitates a GPU
        pytest.skip("this machine has a GPU")
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


@pytest.mark.parametrize("bench", ["scale", "paper_grid"])
def test_the_benchmarks_refuse_an_absent_device_in_one_line_before_any_work(bench, tmp_path, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"clipbridge.evaluate.bench.{bench}")
    with pytest.raises(SystemExit) as stopped:
        module.main(["--device", "cuda:99"])
    assert str(stopped.value).startswith("error: --device 'cuda:99'") and "\n" not in str(stopped.value)
    assert list(tmp_path.iterdir()) == []


def test_the_scale_benchmark_refuses_a_precision_the_device_cannot_run():
    from clipbridge.evaluate.bench.options import checked_device

    with pytest.raises(SystemExit, match="^error: precision tf32 needs a CUDA device"):
        checked_device("cpu", "tf32", ["gda"])
    assert checked_device("cpu", "bf16", ["gda"]) == "cpu"
