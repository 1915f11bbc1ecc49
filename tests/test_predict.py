"""`clipbridge predict` and Run.predict: new images encoded with the run's own model and weights reproduce
the run's test accuracy on the cached test images; other weights are refused; CSV and JSONL outputs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import clipbridge as cb
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.commands.main import predict


def _imagefolder(root: Path, classes: int = 4, per_class: int = 10) -> Path:
    """Class folders of generated images whose colour and stripes depend on the class."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        for i in range(per_class):
            pixels = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
            pixels[:, :, label % 3] += 150
            pixels[:: 2 + label, :, :] = 255
            path = root / f"class_{label}" / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(run, its cache, the image root, the checkpoint): a tiny random CLIP saved as a checkpoint file, a
    generated imagefolder extracted with it, tip-adapter fitted on two seeds."""
    from clipbridge import cli
    from clipbridge.extract.models import load_model

    tmp = tmp_path_factory.mktemp("predict")
    root = _imagefolder(tmp / "images")
    tiny = load_model("clipbridge-tiny", "random", device="cpu")
    checkpoint = tmp / "run1" / "epoch_latest.pt"
    checkpoint.parent.mkdir()
    torch.save(tiny.model.state_dict(), checkpoint)
    out = tmp / "cache.h5"
    status = cli.main(["extract", "--no-progress", "--dataset", "imagefolder", "--root", str(root), "--model",
                       "clipbridge-tiny", "--pretrained", str(checkpoint), "--workers", "0", "--out", str(out)])
    assert status == 0
    cache = cb.open_cache(out)
    run = cb.fit(cache, method="tip-adapter", shots=2, seeds=[1, 2], recipe="uniform", device="cpu")
    return run, cache, root, checkpoint


def test_predicting_the_cached_test_images_reproduces_the_runs_test_accuracy(fitted):
    run, cache, root, _ = fitted
    records = run.evaluate(cache, device="cpu")
    rows = cache.rows("test")
    files = [root / path for path in rows.paths]
    for index, seed in enumerate(run.seeds):
        predictions = run.predict(files, topk=1, seed=seed, device="cpu")
        predicted = [cache.classnames.index(p.classes[0]) for p in predictions]
        accuracy = 100.0 * float(np.mean(np.array(predicted) == rows.labels))
        assert accuracy == pytest.approx(records[index]["test_accuracy"], abs=1e-9), seed


def test_predictions_hold_topk_classes_with_probabilities_best_first(fitted):
    run, _, root, _ = fitted
    (prediction,) = run.predict([root / "class_2" / "00.png"], topk=3, device="cpu")
    assert len(prediction.classes) == 3 and len(set(prediction.classes)) == 3
    assert prediction.probabilities == sorted(prediction.probabilities, reverse=True)
    assert 0 < sum(prediction.probabilities) <= 1 + 1e-6


def test_other_weights_with_the_same_file_name_are_refused(fitted, tmp_path):
    run, _, root, checkpoint = fitted
    other = tmp_path / "run2" / "epoch_latest.pt"
    other.parent.mkdir()
    other.write_bytes(checkpoint.read_bytes() + b"another run")
    with pytest.raises(ClipBridgeError) as info:
        run.predict([root], pretrained=str(other), device="cpu")
    assert "\n" not in str(info.value)
    assert "run2/epoch_latest.pt (sha256" in str(info.value) and "is not the weights the run's cache" in str(info.value)


def test_predict_command_writes_csv_or_jsonl_from_a_saved_run(fitted, tmp_path):
    run, _, root, _ = fitted
    saved = run.save(tmp_path / "runs")
    loaded = cb.load_run(saved)
    assert loaded.method == "tip-adapter" and loaded.classnames == run.classnames
    for name in ("preds.csv", "preds.jsonl"):
        result = CliRunner().invoke(predict, [str(saved), str(root / "class_1"), "--topk", "2", "--out",
                                              str(tmp_path / name), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "preds.csv")))
    assert len(rows) == 10 and set(rows[0]) == {"path", "class_1", "probability_1", "class_2", "probability_2"}
    lines = [json.loads(line) for line in open(tmp_path / "preds.jsonl")]
    assert [line["path"] for line in lines] == [row["path"] for row in rows]
    assert lines[0]["classes"] == [rows[0]["class_1"], rows[0]["class_2"]]
    missing = CliRunner().invoke(predict, [str(saved), str(tmp_path / "nowhere.png")])
    assert isinstance(missing.exception, ClipBridgeError) and "image not found" in str(missing.exception)
