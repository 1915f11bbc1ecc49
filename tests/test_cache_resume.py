"""An interrupted extraction resumes from its .tmp: nothing redone that was done, nothing lost or duplicated."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from clipbridge.errors import ClipBridgeError
from clipbridge.cache.reader import open_cache
from clipbridge.cache.schema import tmp_path as unfinished_path
from clipbridge.cache.writer import CacheWriter

REPO = Path(__file__).resolve().parents[1]
N, V, D, W, CHUNK = 6000, 2, 128, 96, 200
ATTRS = {"model": "m", "pretrained": "t", "dataset": "d", "image_size": 32, "precision": "fp16"}
RECIPE = {"augment": "flip", "seed": 3}

# The extraction both the killed child and the test run: embeddings are a pure function of the row.
WRITER_SCRIPT = f"""
import sys
import numpy as np
from clipbridge.cache.writer import CacheWriter

N, V, D, W, CHUNK = {N}, {V}, {D}, {W}, {CHUNK}

def embedding(rows):
    rows = np.asarray(rows, dtype=np.float64)[:, None, None]
    return (10 * np.sin(rows * 0.37 + np.arange(V)[:, None] * 1.3 + np.arange(D) * 0.11)).astype(np.float16)

def run(path, progress=False):
    writer = CacheWriter(path, attrs={ATTRS!r})
    writer.write_model(np.linspace(-1, 1, W * D, dtype=np.float32).reshape(W, D), 100.0)
    writer.write_classes(["a", "b", "c"])
    eos = np.linspace(0, 1, 3 * W, dtype=np.float32).reshape(3, W)
    writer.write_text("ensemble", ["p0", "p1", "p2"], np.arange(3), eos @ np.linspace(-1, 1, W * D,
                      dtype=np.float32).reshape(W, D), eos)
    written = 0
    for split, n in (("train", N), ("val", N // 3)):
        writer.write_list(split, np.arange(n) % 3, split)
        writer.ensure_split(split, source=np.arange(n), labels=np.arange(n) % 3,
                            paths=[f"{{split}}/{{i}}" for i in range(n)])
        for family, rows, copies in (("plain", np.arange(n), 1), ("tip", np.arange(0, n, 2), V)):
            done = writer.ensure_family(split, family, rows=rows, copies=copies, dim=D, dtype=np.float16,
                                        recipe={RECIPE!r})
            todo = np.flatnonzero(~done)
            for start in range(0, todo.size, CHUNK):
                positions = todo[start:start + CHUNK]
                writer.write_views(split, family, positions, embedding(rows[positions])[:, :copies])
                written += positions.size
                if progress:
                    print(written, flush=True)
    writer.finish()
    return written, writer.resumed

if __name__ == "__main__":
    run(sys.argv[1], progress=True)
"""


@pytest.fixture(scope="module")
def writer_module(tmp_path_factory):
    """The extraction script, importable (for the in-process resume) and runnable (for the killed child)."""
    folder = tmp_path_factory.mktemp("writer_script")
    (folder / "interrupted_writer.py").write_text(WRITER_SCRIPT)
    sys.path.insert(0, str(folder))
    import interrupted_writer
    yield folder / "interrupted_writer.py", interrupted_writer
    sys.path.remove(str(folder))
    sys.modules.pop("interrupted_writer", None)


def _kill_after(script: Path, path: Path, rows_written: int) -> None:
    """Run the extraction in a child process and SIGKILL it once it reports `rows_written` rows done."""
    env = {**os.environ}
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in child.stdout:
            if int(line) >= rows_written:
                child.send_signal(signal.SIGKILL)   # mid-way: the child is already writing the next chunk
                break
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be interrupted"


def test_resume_after_sigkill_gives_the_same_cache_as_an_uninterrupted_run(tmp_path, writer_module):
    script, module = writer_module
    reference_path = tmp_path / "reference.h5"
    module.run(reference_path)
    path = tmp_path / "resumed.h5"
    _kill_after(script, path, rows_written=3 * CHUNK)
    assert unfinished_path(path).exists() and not path.exists()
    with h5py.File(unfinished_path(path)) as handle:
        done_before = int(handle["images/train/views/plain/done"][()].sum())
    assert 3 * CHUNK <= done_before < N

    written, resumed = module.run(path)
    assert resumed
    total = sum(n + (n + 1) // 2 for n in (N, N // 3))
    assert written == total - done_before          # only the rows not done are extracted again
    reference, result = open_cache(reference_path), open_cache(path)
    for split in ("train", "val"):
        for family in ("plain", "tip"):
            assert torch.equal(reference.views(split, family), result.views(split, family))
        a, b = reference.rows(split), result.rows(split)
        assert np.array_equal(a.labels, b.labels) and a.paths == b.paths
    assert result.text_sets == ["ensemble"] and torch.equal(result.text("ensemble").eos,
                                                            reference.text("ensemble").eos)
    assert not unfinished_path(path).exists()


def _start(path: Path, attrs: dict = ATTRS, recipe: dict = RECIPE, labels=np.arange(10) % 3,
           **kwargs) -> CacheWriter:
    writer = CacheWriter(path, attrs=attrs, **kwargs)
    writer.write_list("train", np.arange(10) % 3, "list")
    writer.ensure_split("train", source=np.arange(10), labels=labels, paths=[str(i) for i in range(10)])
    writer.ensure_family("train", "tip", rows=np.arange(10), copies=V, dim=D, dtype=np.float16, recipe=recipe)
    return writer


def test_resuming_returns_the_done_markers_of_the_interrupted_run(tmp_path):
    path = tmp_path / "c.h5"
    writer = _start(path)
    writer.write_views("train", "tip", [2, 3, 7], np.ones((3, V, D)))
    writer.mark_skipped("train", [9], "unreadable")
    writer.close()
    writer = CacheWriter(path, attrs=ATTRS)
    writer.ensure_split("train", source=np.arange(10), labels=np.arange(10) % 3, paths=[str(i) for i in range(10)])
    done = writer.ensure_family("train", "tip", rows=np.arange(10), copies=V, dim=D, dtype=np.float16,
                                recipe=RECIPE)
    assert writer.resumed
    assert np.flatnonzero(done).tolist() == [2, 3, 7, 9]
    writer.close()


def test_a_run_with_only_the_required_attributes_resumes(tmp_path):
    minimal = {"model": "m", "pretrained": "t", "dataset": "d"}
    CacheWriter(tmp_path / "c.h5", attrs=minimal).close()
    writer = CacheWriter(tmp_path / "c.h5", attrs=minimal)
    assert writer.resumed
    writer.close()


def test_an_unfinished_cache_of_another_model_is_refused_until_restarted(tmp_path):
    path = tmp_path / "c.h5"
    _start(path).close()
    other = {**ATTRS, "model": "RN50"}
    with pytest.raises(ClipBridgeError, match=r"c\.h5\.tmp.*model='m' \(now 'RN50'\).*--restart"):
        CacheWriter(path, attrs=other)
    writer = CacheWriter(path, attrs=other, restart=True)
    assert not writer.resumed
    writer.close()


def test_a_family_started_with_another_recipe_is_refused(tmp_path):
    path = tmp_path / "c.h5"
    _start(path).close()
    with pytest.raises(ClipBridgeError, match=r"images/train/views/tip.*recipe.*--restart"):
        _start(path, recipe={"augment": "crop", "seed": 3})


def test_a_split_started_with_other_images_is_refused(tmp_path):
    path = tmp_path / "c.h5"
    _start(path).close()
    writer = CacheWriter(path, attrs=ATTRS)
    with pytest.raises(ClipBridgeError, match=r"images/train: the unfinished cache was started with other images"):
        writer.ensure_split("train", source=np.arange(10), labels=np.arange(10) % 3,
                            paths=[f"other{i}" for i in range(10)])
    with pytest.raises(ClipBridgeError, match=r"lists/train: the unfinished cache was started on another train"):
        writer.write_list("train", np.arange(10) % 2, "list")
    writer.close()


def test_an_unreadable_tmp_is_reported_and_started_again(tmp_path, caplog):
    path = tmp_path / "c.h5"
    unfinished_path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)    # a torn file
    with caplog.at_level(logging.WARNING, logger="clipbridge.cache.writer"):
        writer = _start(path)
    assert not writer.resumed
    assert "c.h5.tmp is unreadable" in caplog.text
    assert not writer.done("train", "tip").any()
    writer.close()


def test_a_tmp_another_process_is_writing_is_not_touched(tmp_path):
    path = tmp_path / "c.h5"
    code = ("import sys, time\nfrom clipbridge.cache.writer import CacheWriter\n"
            f"w = CacheWriter({str(path)!r}, attrs={ATTRS!r})\nprint('open', flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ})
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(ClipBridgeError, match=r"c\.h5\.tmp is open in another process"):
            CacheWriter(path, attrs=ATTRS)
        assert unfinished_path(path).exists()
    finally:
        child.kill()
        child.wait()
