"""`clipbridge predict` and Run.predict: new images encoded with the run's own model and weights reproduce
the run's test accuracy on the cached test images; other weights are refused; CSV and JSONL outputs; the
probabilities are the run's calibrated ones and say so; conformal sets; unreadable images and nested
folders."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import clipbridge as cb
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.commands.main import predict
from image_folders import striped_imagefolder


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(run, its cache, the image root, the checkpoint): a tiny random CLIP saved as a checkpoint file, a
    generated imagefolder extracted with it, tip-adapter fitted on two seeds."""
    from clipbridge import cli
    from clipbridge.extract.models import load_model

    tmp = tmp_path_factory.mktemp("predict")
    root = striped_imagefolder(tmp / "images", 4, 10)
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
    assert len(rows) == 10 and set(rows[0]) == {"path", "calibration", "class_1", "probability_1", "class_2",
                                                "probability_2"}
    assert rows[0]["calibration"] == f"temperature {run.state.info['calibration']['temperature'][0]:.6g}"
    lines = [json.loads(line) for line in open(tmp_path / "preds.jsonl")]
    assert [line["path"] for line in lines] == [row["path"] for row in rows]
    assert lines[0]["classes"] == [rows[0]["class_1"], rows[0]["class_2"]]
    missing = CliRunner().invoke(predict, [str(saved), str(tmp_path / "nowhere.png")])
    assert isinstance(missing.exception, ClipBridgeError) and "image not found" in str(missing.exception)


def _cached_test_image(cache, root):
    rows = cache.rows("test")
    return root / rows.paths[0], cache.views("test", "plain", np.array([0]))[:, 0]


def test_probabilities_are_the_runs_calibrated_ones_and_carry_their_calibration(fitted):
    run, cache, root, _ = fitted
    from clipbridge.bridge.registry import get_method

    path, query = _cached_test_image(cache, root)
    logits = get_method(run.method).logits(run.state, query)                          # [S, 1, C]
    for seed_index, seed in enumerate(run.seeds):
        temperature = run.state.info["calibration"]["temperature"][seed_index]
        (prediction,) = run.predict([path], topk=4, seed=seed, device="cpu")
        expected = torch.softmax(logits[seed_index, 0].double() / temperature, -1).sort(descending=True).values
        assert prediction.probabilities == pytest.approx(expected.tolist(), abs=1e-5)
        assert prediction.calibration == f"temperature {temperature:.6g}"
    (raw,) = run.predict([path], topk=4, device="cpu", calibration="none")
    assert raw.calibration == "none"
    assert raw.probabilities == pytest.approx(torch.softmax(logits[0, 0].double(), -1).sort(descending=True)
                                              .values.tolist(), abs=1e-5)


def test_prediction_sets_hold_the_classes_the_conformal_threshold_admits(fitted):
    run, cache, root, _ = fitted
    from clipbridge.evaluate.fitting.calibrate import run_calibration
    from clipbridge.evaluate.fitting.conformal_sets import fit_threshold, holdout

    one_shot = cb.fit(cache, method="tip-adapter", shots=1, seeds=[1], recipe="uniform", device="cpu")
    threshold = fit_threshold(one_shot.state, 0, holdout(cache, one_shot.meta, 1),
                              run_calibration(one_shot.state, 1), 0.8).threshold
    predictions = one_shot.predict([root], topk=4, device="cpu", coverage=0.8, cache=cache)
    for p in predictions:        # classes whose rounded probability lies within 1e-5 of the threshold: either way
        clear = {c: q for c, q in zip(p.classes, p.probabilities) if abs(1 - q - threshold) > 1e-5}
        assert [c for c in p.prediction_set if c in clear] == [c for c, q in clear.items() if 1 - q <= threshold]
    assert any(p.prediction_set for p in predictions)
    assert any(len(p.prediction_set) < len(p.classes) for p in predictions)
    with pytest.raises(ClipBridgeError) as refused:
        one_shot.predict([root], device="cpu", coverage=0.9, cache=cache)
    assert "4 calibration image(s) cannot guarantee coverage 0.9: it takes at least 9" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_an_unreadable_image_stops_predict_in_one_line_or_is_listed_with_skip_unreadable(fitted, tmp_path):
    run, _, root, _ = fitted
    saved = run.save(tmp_path / "runs")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes((root / "class_0" / "00.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not an image at all")
    stopped = CliRunner().invoke(predict, [str(saved), str(folder), "--device", "cpu"])
    assert isinstance(stopped.exception, ClipBridgeError)
    message = str(stopped.exception)
    assert "broken.png" in message and "--skip-unreadable" in message and "\n" not in message
    out = tmp_path / "p.csv"
    done = CliRunner().invoke(predict, [str(saved), str(folder), "--device", "cpu",
                                            "--skip-unreadable", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "skipped 1 unreadable image(s)" in done.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(out))}
    assert set(rows) == {"a.png", "b.png", "broken.png"}
    assert rows["broken.png"]["error"] and rows["broken.png"]["class_1"] == ""
    assert rows["a.png"]["error"] == "" and rows["a.png"]["class_1"]


def test_images_in_nested_folders_are_read(fitted, tmp_path):
    run, _, root, _ = fitted
    nested = tmp_path / "images" / "cat" / "2024"
    nested.mkdir(parents=True)
    (nested / "x.png").write_bytes((root / "class_3" / "01.png").read_bytes())
    (tmp_path / "images" / "cat" / "y.png").write_bytes((root / "class_3" / "02.png").read_bytes())
    predictions = run.predict([tmp_path / "images"], device="cpu")
    assert sorted(Path(p.path).name for p in predictions) == ["x.png", "y.png"]


def test_a_run_saved_before_calibration_predicts_uncalibrated_and_says_so(fitted, tmp_path):
    run, cache, root, _ = fitted
    saved = run.save(tmp_path / "runs")
    document = json.loads((saved / "run.json").read_text())
    del document["info"]["calibration"]
    (saved / "run.json").write_text(json.dumps(document))
    result = CliRunner().invoke(predict, [str(saved), str(root / "class_0" / "00.png"), "--device", "cpu",
                                          "--out", str(tmp_path / "old.jsonl")])
    assert result.exit_code == 0, result.output
    assert "uncalibrated: the run was saved before clipbridge fitted a temperature" in result.stderr
    (line,) = [json.loads(text) for text in open(tmp_path / "old.jsonl")]
    assert line["calibration"] == "none" and line["prediction_set"] is None


def test_predict_coverage_says_how_many_held_out_images_calibrated_the_sets(fitted, tmp_path):
    _, cache, root, _ = fitted
    one_shot = cb.fit(cache, method="tip-adapter", shots=1, seeds=[1], recipe="uniform", device="cpu")
    saved = one_shot.save(tmp_path / "runs")
    result = CliRunner().invoke(predict, [str(saved), str(root / "class_1"), "--device", "cpu", "--coverage", "0.8",
                                          "--cache", str(cache.path), "--out", str(tmp_path / "sets.csv")])
    assert result.exit_code == 0, result.output
    assert "calibrated on 4 held-out image(s): the val split's images outside the seed's validation draw" \
        in result.stderr
    rows = list(csv.DictReader(open(tmp_path / "sets.csv")))
    assert all(int(r["set_size"]) == len(r["prediction_set"].split("|")) for r in rows if r["prediction_set"])
    refused = CliRunner().invoke(predict, [str(saved), str(root), "--coverage", "1.5"])
    assert isinstance(refused.exception, ClipBridgeError) and "--coverage must be between 0 and 1" in str(refused.exception)
