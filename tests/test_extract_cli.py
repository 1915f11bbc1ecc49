"""`python cli.py extract` end to end: cache contents, resume after SIGKILL, torchrun, bad inputs.

End-to-end runs are subprocesses of `cli.py`; the two corrupt-JPEG cases call cli.main in-process (same
entry point, no second torch import) to stay within the test-time budget.

Real JPEGs from ../shared/data/flowers17 (a trimmed split file) when ../shared exists, else generated
images in an imagefolder. The model is clipbridge-tiny, randomly initialised (seeded) or from a checkpoint
file written here. Subprocesses run with OMP_NUM_THREADS=1 (identical arithmetic in every process).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FLOWERS = REPO.parent / "shared" / "data" / "flowers17"
PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
TINY = ["--model", "clipbridge-tiny"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(*args: str, launcher: list[str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    command = (launcher or [PYTHON]) + [str(REPO / "cli.py"), "extract", "--no-progress", *map(str, args)]
    return subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file, by name."""
    out = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _generated_imagefolder(root: Path, classes: int = 6, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for label in range(classes):
        for i in range(per_class):
            path = root / f"class_{label}" / f"{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) // (label + 1)
            Image.fromarray(pixels).save(path, quality=90)
    return root


@pytest.fixture(scope="module")
def dataset_args(tmp_path_factory) -> list[str]:
    """CLI arguments naming a small dataset of ~70 images with train/val/test splits."""
    tmp = tmp_path_factory.mktemp("extract-data")
    if FLOWERS.is_dir():
        full = json.loads((FLOWERS / "split_zhou_Flowers17.json").read_text())
        sizes = {"train": 6, "val": 3, "test": 3}
        trimmed = {split: [row for label in range(6) for row in [r for r in full[split] if r[1] == label][:n]]
                   for split, n in sizes.items()}
        split_file = tmp / "split_zhou_Flowers6.json"
        split_file.write_text(json.dumps(trimmed))
        return ["--dataset", "splitfile", "--root", str(FLOWERS / "jpg"), "--split-file", str(split_file)]
    return ["--dataset", "imagefolder", "--root", str(_generated_imagefolder(tmp / "generated"))]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """(LoadedModel, checkpoint path): clipbridge-tiny, random init, saved as a .pt file."""
    from clipbridge.extract.models import load_model

    tiny = load_model("clipbridge-tiny", "random", device="cpu")
    path = tmp_path_factory.mktemp("weights") / "tiny-random.pt"
    torch.save(tiny.model.state_dict(), path)
    return tiny, path


def _run_args(dataset_args, checkpoint, out, workers="0"):
    return [*dataset_args, *TINY, "--pretrained", checkpoint, "--view-families", "flip,semo-r0.8-j",
            "--batch-size", "2", "--workers", workers, "--prompts", "ensemble,classname", "--out", out]


@pytest.fixture(scope="module")
def reference(dataset_args, tiny_checkpoint, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """An uninterrupted single-process run: families plain, flip, semo-r0.8-j; batches of 2, 2 DataLoader
    workers."""
    out = tmp_path_factory.mktemp("reference") / "cache" / "ref.h5"
    result = run_cli(*_run_args(dataset_args, tiny_checkpoint[1], out, workers="2"))
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.slow
def test_extract_writes_a_complete_cache_with_views_text_and_checkpoint_identity(dataset_args, tiny_checkpoint,
                                                                                 reference):
    from clipbridge.cache.reader import open_cache
    from clipbridge.extract.models import file_sha256

    tiny, checkpoint = tiny_checkpoint
    out, result = reference
    assert f"wrote {out}" in result.stdout and "images/s" in result.stdout
    cache = open_cache(out)
    assert cache.attrs["pretrained"] == "tiny-random.pt"
    assert cache.attrs["pretrained_sha256"] == file_sha256(checkpoint)
    assert set(cache.splits) == {"train", "val", "test"} and cache.text_sets == ["ensemble", "classname"]
    assert cache.coverage.is_everything
    dim = tiny.model.text_projection.shape[1]
    families = cache.families("train")
    assert list(families) == ["plain", "flip", "semo-r0.8-j"] and families["semo-r0.8-j"].copies == 10
    assert cache.views("train", "semo-r0.8-j").shape == (36, 10, dim)
    assert list(cache.families("test")) == ["plain"] and list(cache.families("val")) == ["plain"]
    assert "RandomResizedCrop" in families["semo-r0.8-j"].recipe["describe"]
    text = cache.text(["ensemble"])
    torch.testing.assert_close(text.eos @ cache.text_projection, text.projected, rtol=1e-4, atol=1e-5)
    # plain is the model's own encode_image of the preprocessed image; flip its mirror; a crop the exact
    # torchvision recipe under the copy's seed
    from clipbridge.extract.views import ViewMaker, get_family

    root = Path(dataset_args[dataset_args.index("--root") + 1])
    name = cache.rows("train").paths[5]
    image = Image.open(root / name).convert("RGB")
    maker = ViewMaker(tiny.preprocess, tiny.image_size, tiny.mean, tiny.std, seed=0)
    with torch.no_grad():
        for family in ("plain", "flip", "semo-r0.8-j"):
            expected = tiny.model.encode_image(maker.views(image, get_family(family), "train", name))
            torch.testing.assert_close(cache.views("train", family, [5])[0], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(cache.views("train", "plain", [5]), cache.views("train", "flip", [5]))


@pytest.mark.slow
def test_resume_after_sigkill_gives_arrays_identical_to_an_uninterrupted_run(dataset_args, tiny_checkpoint,
                                                                            reference, tmp_path):
    out = tmp_path / "resumed.h5"
    args = _run_args(dataset_args, tiny_checkpoint[1], out)
    command = [PYTHON, str(REPO / "cli.py"), "extract", "--no-progress", *map(str, args)]
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = out.with_name(out.name + ".tmp")
    deadline = time.monotonic() + 120
    killed_at = None
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with h5py.File(tmp, "r", locking=False) as handle:
                name = "images/train/views/semo-r0.8-j/done"
                done = int(handle[name][()].sum()) if name in handle else 0
        except (OSError, KeyError, RuntimeError):   # a torn read of the file the other process is writing
            done = 0
        if done >= 4:
            process.send_signal(signal.SIGKILL)
            killed_at = done
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert killed_at is not None, "the run finished before it could be killed"
    assert process.returncode == -signal.SIGKILL
    assert not out.exists() and tmp.exists()
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "(resumed)" in result.stdout
    expected, got = read_arrays(reference[0]), read_arrays(out)
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name


@pytest.mark.slow
def test_torchrun_two_gloo_processes_write_the_same_cache_as_one(dataset_args, tiny_checkpoint, reference,
                                                                tmp_path):
    out = tmp_path / "torchrun.h5"
    result = run_cli(*_run_args(dataset_args, tiny_checkpoint[1], out), "--device", "cpu",
                     launcher=[TORCHRUN, "--standalone", "--nproc_per_node", "2"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("wrote ") == 1  # only rank 0 reports
    expected, got = read_arrays(reference[0]), read_arrays(out)
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name


def _small_folder_with_corrupt_jpeg(root: Path) -> Path:
    _generated_imagefolder(root / "train", classes=2, per_class=3)
    _generated_imagefolder(root / "test", classes=2, per_class=1)
    bad = root / "train" / "class_1" / "01.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    return bad


def run_cli_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """cli.main in this process (torch and open_clip already imported): exit status, stdout, stderr."""
    from clipbridge import cli

    status = cli.main(["extract", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


def test_corrupt_jpeg_stops_with_its_path_and_leaves_only_the_resumable_tmp(tmp_path, capsys):
    bad = _small_folder_with_corrupt_jpeg(tmp_path / "data")
    out = tmp_path / "out" / "c.h5"
    result = run_cli_in_process(capsys, "--dataset", "imagefolder", "--root", tmp_path / "data", *TINY,
                                "--pretrained", "random", "--workers", "0", "--out", out)
    assert result.returncode != 0
    (line,) = error_lines(result)
    assert str(bad) in line and "--skip-bad" in line and "resumes" in line
    assert not out.exists() and out.with_name("c.h5.tmp").exists()


def test_skip_bad_leaves_the_corrupt_jpeg_out_and_counts_it(tmp_path, capsys):
    from clipbridge.cache.reader import open_cache

    _small_folder_with_corrupt_jpeg(tmp_path / "data")
    out = tmp_path / "c.h5"
    result = run_cli_in_process(capsys, "--dataset", "imagefolder", "--root", tmp_path / "data", *TINY,
                                "--pretrained", "random", "--workers", "0", "--skip-bad", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "train: 5 images, 1 skipped" in result.stdout
    cache = open_cache(out)
    _, _, paths = cache.plain("train")
    assert len(paths) == 5 and "train/class_1/01.jpg" not in paths
    rows = cache.rows("train")
    assert rows.paths[int(rows.skipped.nonzero()[0][0])] == "train/class_1/01.jpg"
    with h5py.File(out, "r") as handle:
        assert handle["images/train/skipped"].attrs["count"] == 1


def _assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0
    (line,) = error_lines(result)
    for fragment in fragments:
        assert fragment in line
    return line


def test_missing_root_fails_with_one_line_naming_it(tmp_path):
    result = run_cli("--dataset", "dtd", "--root", tmp_path / "nowhere", *TINY, "--pretrained", "random",
                     "--out", tmp_path / "x.h5")
    _assert_clean_failure(result, str(tmp_path / "nowhere"))
    assert not list(tmp_path.glob("x.h5*"))


def test_split_file_not_matching_the_images_fails_cleanly(tmp_path):
    _generated_imagefolder(tmp_path / "imgs", classes=2, per_class=2)
    split = {"train": [["class_0/00.jpg", 0, "a"], ["class_9/00.jpg", 1, "b"]], "test": [["class_0/01.jpg", 0, "a"]]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    result = run_cli("--dataset", "splitfile", "--root", tmp_path / "imgs", "--split-file", tmp_path / "split.json",
                     *TINY, "--pretrained", "random", "--out", tmp_path / "x.h5")
    _assert_clean_failure(result, "does not match the images", "class_9/00.jpg")
    assert not list(tmp_path.glob("x.h5*"))


def test_unwritable_output_fails_cleanly(tmp_path):
    _generated_imagefolder(tmp_path / "imgs", classes=2, per_class=3)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = run_cli("--dataset", "imagefolder", "--root", tmp_path / "imgs", *TINY, "--pretrained", "random",
                     "--out", blocker / "x.h5")
    _assert_clean_failure(result, str(blocker))
    assert blocker.read_text() == "a file, not a folder"


def test_workers_default_to_the_cpus_available_at_most_eight(monkeypatch):
    from clipbridge.extract import commands

    monkeypatch.setattr(commands.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert commands.default_workers() == 8
    monkeypatch.setattr(commands.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert commands.default_workers() == 2


def test_ctrl_c_names_the_command_that_resumes(monkeypatch, capsys):
    from clipbridge import cli
    from clipbridge.extract import commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "coverage_from_options", interrupted)
    status = cli.main(["extract", "--dataset", "shapes", "--model", "clipbridge-tiny"])
    err = capsys.readouterr().err
    assert status == 130 and [line for line in err.splitlines() if line.strip()] == [err.strip()]
    assert "error: interrupted; what is done is kept, and running the same command again resumes: clipbridge " \
           "extract --dataset shapes --model clipbridge-tiny" in err
