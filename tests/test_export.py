"""`clipbridge export`: one TorchScript file per fitted run that plain torch loads -- in a process where
clipbridge and open_clip cannot be imported -- and that the README's lines (its own metadata's preprocessing,
torchvision alone) give `predict`'s probabilities (within 1e-5) for every registered method; the temperature of
the run's calibration is applied; a head the trace cannot reproduce is refused in one line."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import clipbridge as cb
import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.registry import REGISTRY, get_method
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.commands.export import export
from clipbridge.evaluate.fitting.export import METADATA_NAME, calibration_of, export_run
from clipbridge.evaluate.fitting.predict import predict_images
from clipbridge.evaluate.reporting.files import ordinary_mode
from image_folders import striped_imagefolder

#: Speed knobs, applied to the methods that have them (the head's export is checked, not its accuracy).
FAST = {"steps": 12, "epochs": 3, "search_rounds": 2, "search_per_round": 16, "max_iter": 50}
SEEDS = [1, 2]

README = Path(__file__).resolve().parents[1] / "README.md"

#: Run by a bare interpreter (clipbridge and open_clip blocked): the README's lines for each file and image.
PLAIN_TORCH = r'''
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("clipbridge", "open_clip"):
            raise ImportError(f"{name} is not available here")
        return None

sys.meta_path.insert(0, Blocked())
readme, files, images, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
found = {}
for name, path in files.items():
    rows = []
    for image in images:
        namespace = {}
        exec(readme.replace('"classifier.pt"', repr(path)).replace('"photo.jpg"', repr(image)), namespace)
        rows.append(namespace["probs"].tolist())
    found[name] = {"classnames": namespace["meta"]["classnames"], "probabilities": rows}
assert "clipbridge" not in sys.modules and "open_clip" not in sys.modules, "imported clipbridge"
json.dump(found, open(out, "w"))
'''


def _readme_example() -> str:
    """The Python lines of the README's export example."""
    text = README.read_text()
    section = text[text.index("<!-- export-example -->"):text.index("<!-- /export-example -->")]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def cache_and_images(tmp_path_factory):
    """(a cache of a generated imagefolder extracted with the bundled tiny model, its test image files)."""
    from clipbridge import cli

    tmp = tmp_path_factory.mktemp("export")
    root = striped_imagefolder(tmp / "images", 3, 6, size=(44, 60), seed=1)
    out = tmp / "cache.h5"
    assert cli.main(["extract", "--no-progress", "--dataset", "imagefolder", "--root", str(root), "--model",
                     "clipbridge-tiny", "--workers", "0", "--out", str(out)]) == 0
    cache = cb.open_cache(out)
    return cache, [root / path for path in cache.rows("test").paths]


def _fit(cache, name: str):
    hparams = {k: v for k, v in FAST.items() if k in get_method(name).defaults}
    return cb.fit(cache, method=name, shots=2, seeds=SEEDS, recipe="uniform", hparams=hparams, device="cpu")


def _predicted(run, files, seed: int) -> np.ndarray:
    """predict's probabilities [N, C] in class order."""
    out = np.zeros((len(files), len(run.classnames)))
    for row, p in enumerate(predict_images(run, files, topk=len(run.classnames), seed=seed, device="cpu")):
        out[row, [run.classnames.index(c) for c in p.classes]] = p.probabilities
    return out


def test_every_method_exported_and_loaded_by_plain_torch_gives_predicts_probabilities(cache_and_images, tmp_path):
    cache, files = cache_and_images
    assert {"semobridge", "semobridge-t", "tip-adapter", "ape", "clip-adapter", "linear-probe"} <= set(REGISTRY)
    files_out, expected = {}, {}
    for name in sorted(REGISTRY):
        saved = _fit(cache, name).save(tmp_path / "runs")
        run = cb.load_run(saved)
        target = tmp_path / f"{name}.pt"
        result = CliRunner().invoke(export, [str(saved), "--out", str(target), "--seed", "2"])
        assert result.exit_code == 0, (name, result.output, result.exception)
        calibration = calibration_of(run.state)
        assert (f"exported {name} (seed 2, 3 classes, calibration {calibration['method']}, temperature "
                f"{calibration['temperature'][1]:.4g})") in result.output
        files_out[name], expected[name] = str(target), _predicted(run, files, seed=2)
    answer = tmp_path / "plain-torch.json"
    bare = subprocess.run([sys.executable, "-c", PLAIN_TORCH, _readme_example(), json.dumps(files_out),
                           json.dumps(list(map(str, files))), str(answer)],
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=600)
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert bare.stdout.count("\n") == len(files) * len(files_out)           # the README's print, per image
    found = json.loads(answer.read_text())
    for name in sorted(REGISTRY):
        assert found[name]["classnames"] == list(cache.classnames)
        probabilities = np.array(found[name]["probabilities"])
        assert probabilities.shape == (len(files), 3)
        np.testing.assert_allclose(probabilities, expected[name], atol=1e-5, rtol=0, err_msg=name)
        assert not np.allclose(expected[name], 1 / 3, atol=1e-3), name        # a real classifier, not uniform


def test_the_metadata_says_how_to_preprocess_and_where_the_numbers_came_from(cache_and_images, tmp_path):
    cache, _ = cache_and_images
    run = _fit(cache, "tip-adapter")
    run.state.info["calibration"] = {"method": "temperature", "temperature": [1.5, 2.0], "fitted_on": "val"}
    meta = export_run(run, tmp_path / "sub" / "tip.pt", seed=1)
    extra = {METADATA_NAME: ""}
    torch.jit.load(str(tmp_path / "sub" / "tip.pt"), _extra_files=extra)
    stored = json.loads(extra[METADATA_NAME])
    assert stored == json.loads(json.dumps(meta))
    pre = stored["preprocess"]
    assert pre["size"] == [64, 64] and pre["interpolation"] == "bicubic" and pre["resize_mode"] == "shortest"
    assert pre["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073]) and len(pre["std"]) == 3
    assert stored["classnames"] == list(cache.classnames) and stored["method"] == "tip-adapter"
    assert stored["seed"] == 1 and stored["seeds"] == SEEDS and stored["model"] == "clipbridge-tiny"
    assert stored["pretrained"] == "shapes" and len(stored["weights_sha256"]) == 64
    assert stored["calibration"] == {"method": "temperature", "temperature": [1.5, 2.0], "fitted_on": "val",
                                     "temperature_used": 1.5}
    run.state.info.pop("calibration")                        # a run fitted before calibration existed
    assert calibration_of(run.state) == {"method": "none", "temperature": [1.0, 1.0]}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["tip.pt"]          # no temp file left
    assert (tmp_path / "sub" / "tip.pt").stat().st_mode & 0o777 == ordinary_mode()      # not private (mkstemp's)


def test_the_runs_temperature_divides_the_logits_of_its_seed(cache_and_images, tmp_path):
    cache, files = cache_and_images
    run = _fit(cache, "zeroshot")
    run.state.info["calibration"] = {"method": "none", "temperature": [1.0, 1.0]}
    plain = torch.tensor(_predicted(run, files, seed=2))                  # softmax of the raw logits
    run.state.info["calibration"] = {"method": "temperature", "temperature": [3.0, 0.5]}
    meta = export_run(run, tmp_path / "calibrated.pt", seed=2)
    assert meta["calibration"]["temperature_used"] == 0.5 and meta["calibration"]["method"] == "temperature"
    model = torch.jit.load(str(tmp_path / "calibrated.pt"))
    from clipbridge.extract.models import load_model

    loaded = load_model("clipbridge-tiny", "shapes", device="cpu")
    batch = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in files])
    with torch.no_grad():
        found = model(batch).double()
    sharpened = plain.clamp_min(1e-30) ** 2                   # softmax(z / 0.5) = p**2, renormalised
    torch.testing.assert_close(found, sharpened / sharpened.sum(-1, keepdim=True), atol=1e-5, rtol=0)


def test_a_head_the_trace_cannot_reproduce_is_refused_in_one_line(cache_and_images, tmp_path, monkeypatch):
    cache, _ = cache_and_images
    run = _fit(cache, "zeroshot")
    method = get_method("zeroshot")
    honest = method.logits
    # a value read out of the batch (here its size) becomes a constant of the trace: right on the example,
    # wrong on a batch of another size, even where the run's temperature flattens the probabilities
    monkeypatch.setattr(method, "logits", lambda state, q: honest(state, q) * float(q.shape[0]))
    with pytest.raises(ClipBridgeError) as info:
        export_run(run, tmp_path / "bad.pt")
    assert "zeroshot: its head cannot be exported to TorchScript" in str(info.value)
    assert "\n" not in str(info.value) and not (tmp_path / "bad.pt").exists()


def test_a_seed_the_run_was_not_fitted_with_is_refused(cache_and_images, tmp_path):
    cache, _ = cache_and_images
    run = _fit(cache, "zeroshot")
    with pytest.raises(ClipBridgeError, match="fitted with seeds 1, 2, not 7"):
        export_run(run, tmp_path / "x.pt", seed=7)
