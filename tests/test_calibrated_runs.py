"""Calibration and conformal sets wired through fit / evaluate (evaluate.fitting.calibrate, conformal_sets):
runs store one temperature per seed fitted on their validation queries, records carry ECE/NLL/Brier before and
after it, old runs load as uncalibrated, the conformal sets hold out the selection data and cover at the level
asked on synthetic caches over many seeds, and too few held-out images are refused in one line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import clipbridge as cb
from clipbridge.bridge.calibration import calibrated_probabilities, fit_temperature
from clipbridge.bridge.registry import get_method
from clipbridge.cache.fewshot import draw_fewshot
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.fitting.calibrate import run_calibration
from clipbridge.evaluate.fitting.conformal_sets import holdout
from clipbridge.evaluate.fitting.tasks import build_fit_task


def _cache(path, seed=0, val=300, test=400, classes=6):
    return cb.open_cache(write_synthetic_cache(path, classes=classes, train_per_class=16, dim=24, width=16,
                                               val=val, test=test, seed=seed))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return _cache(tmp_path_factory.mktemp("calibrated") / "syn.h5")


@pytest.fixture(scope="module")
def run(cache):
    return cb.fit(cache, method="tip-adapter", shots=4, seeds=[1, 2], recipe="uniform", device="cpu")


def test_a_fitted_run_stores_one_temperature_per_seed_fitted_on_its_validation_queries(cache, run):
    stored = run.state.info["calibration"]
    assert stored["method"] == "temperature" and len(stored["temperature"]) == 2
    assert "val split" in stored["fitted_on"] and "selection" in stored["fitted_on"]
    task, _ = build_fit_task(cache, shots=4, seeds=[1, 2])
    logits = get_method("tip-adapter").logits(run.state, task.val)
    assert torch.allclose(fit_temperature(logits, task.val_labels), torch.tensor(stored["temperature"],
                                                                                  dtype=torch.float64))
    for s, t in enumerate(stored["temperature"]):
        mask = task.val_labels[s] >= 0
        nll = float(torch.nn.functional.cross_entropy(logits[s][mask].double() / t, task.val_labels[s][mask]))
        assert stored["val_nll"][s] == pytest.approx(nll, rel=1e-6)


def test_records_carry_calibration_metrics_before_and_after(cache, run):
    records = run.evaluate(cache, device="cpu")
    for s, r in enumerate(records):
        assert r["calibration"] == "temperature"
        assert r["temperature"] == pytest.approx(run.state.info["calibration"]["temperature"][s])
        for name in ("ece", "nll", "brier", "confidence"):
            assert math.isfinite(r[name]) and math.isfinite(r[f"{name}_raw"])
        assert sum(r["reliability"]["count"]) == 400
    queries, labels, _ = cache.plain("test")
    logits = get_method("tip-adapter").logits(run.state, queries)
    p = calibrated_probabilities(logits, torch.tensor(run.state.info["calibration"]["temperature"]))
    assert records[0]["nll"] == pytest.approx(float(-p[0, torch.arange(400), labels].log().mean()), rel=1e-6)
    assert records[0]["nll_raw"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits[0].double(), labels)), rel=1e-6)
    none = run.evaluate(cache, device="cpu", calibration="none")
    assert none[0]["calibration"] == "none" and none[0]["nll"] == pytest.approx(none[0]["nll_raw"])


def test_a_run_saved_before_calibration_loads_and_scores_as_uncalibrated(cache, run, tmp_path):
    folder = run.save(tmp_path / "runs")
    document = json.loads((folder / "run.json").read_text())
    del document["info"]["calibration"]
    (folder / "run.json").write_text(json.dumps(document))
    old = cb.load_run(folder)
    chosen = run_calibration(old.state, 2)
    assert chosen.method == "none" and "before clipbridge fitted a temperature" in chosen.note
    assert old.evaluate(cache, device="cpu")[0]["calibration"] == "none"
    with pytest.raises(ClipBridgeError, match="no fitted temperature"):
        run_calibration(old.state, 2, "temperature")


def test_fit_with_calibration_none_stores_unit_temperatures(cache):
    fitted = cb.fit(cache, method="zeroshot", shots=1, seeds=[1], recipe="uniform", device="cpu", calibration="none")
    assert fitted.state.info["calibration"]["method"] == "none"
    assert fitted.state.info["calibration"]["temperature"] == [1.0]


def test_the_held_out_images_exclude_the_selection_data(cache, run):
    val_list = cache.list_labels("val").tolist()
    for seed in (1, 2):
        draw = draw_fewshot(cache.list_labels("train").tolist(), val_list, 4, seed)
        held = holdout(cache, run.meta, seed)
        assert held.labels.numel() == len(val_list) - len(draw.val)
        picked = cache.views("val", "plain", np.array(sorted(draw.val)))[:, 0]
        distance = torch.cdist(picked, held.queries).min()
        assert float(distance) > 0                                       # no selection image is held out
    paper = {**run.meta, "protocol": "paper"}
    assert "train images outside the seed's support" in holdout(cache, paper, 1).source


def test_conformal_sets_cover_at_the_level_on_synthetic_caches_over_many_seeds(tmp_path):
    """10 synthetic caches x 3 fit seeds: the mean test coverage of the 90 % sets is at least 0.9 minus the
    binomial margin (3 standard errors of the calibration quantile's coverage over independent caches, plus
    the test sampling error), and the sets are smaller than the class count (not every class every time)."""
    level, coverages, sizes, held = 0.9, [], [], []
    for seed in range(10):
        cache = _cache(tmp_path / f"s{seed}.h5", seed=seed, val=240, test=300)
        fitted = cb.fit(cache, method="zeroshot", shots=4, seeds=[1, 2, 3], recipe="uniform", device="cpu")
        for record in fitted.evaluate(cache, device="cpu", coverage=level):
            coverages.append(record["coverage"])
            sizes.append(record["mean_set_size"])
            held.append(record["conformal_images"])
    n, alpha = min(held), 1 - level
    margin = 3 * math.sqrt(alpha * level / (n + 2)) / math.sqrt(10) + 3 * math.sqrt(alpha * level / (300 * 10))
    assert float(np.mean(coverages)) >= level - margin
    assert float(np.mean(sizes)) < 6


def test_too_few_held_out_images_for_the_level_are_refused_in_one_line(tmp_path):
    cache = _cache(tmp_path / "small.h5", val=30, test=60)                # 30 val images, 24 drawn at 4 shots
    fitted = cb.fit(cache, method="zeroshot", shots=4, seeds=[1], recipe="uniform", device="cpu")
    with pytest.raises(ClipBridgeError) as error:
        fitted.evaluate(cache, device="cpu", coverage=0.9)
    assert "6 calibration image(s) cannot guarantee coverage 0.9: it takes at least 9" in str(error.value)
    assert "\n" not in str(error.value)
    assert fitted.evaluate(cache, device="cpu", coverage=0.8)[0]["conformal_images"] == 6


def test_bench_records_calibration_for_every_method_and_draws_a_reliability_diagram(cache, tmp_path):
    from clipbridge.evaluate.bench.grid import BenchSpec, run_bench
    from clipbridge.evaluate.reporting.records import read_records, results_path

    spec = BenchSpec(caches=(cache.path,), methods=("zeroshot", "tip-adapter"), shots=(2, 4), seeds=(1,),
                     recipe="uniform", device="cpu")
    outcome = run_bench(spec, tmp_path, "rel", progress=False, echo=lambda text: None)
    records = read_records(results_path(tmp_path))
    assert {r["method"] for r in records} == {"zeroshot", "tip-adapter"}
    assert all(r["calibration"] == "temperature" and "ece_raw" in r and "brier" in r for r in records)
    diagram = outcome.outputs["reliability diagram"]
    assert diagram.name == "reliability.png" and diagram.stat().st_size > 10_000
    table = outcome.outputs["calibration table"].read_text()
    row = next(line for line in table.splitlines() if line.startswith("| synthetic | tip-adapter | 4 |"))
    (record,) = [r for r in records if r["method"] == "tip-adapter" and r["shots"] == 4]
    assert f"{record['ece_raw']:.3f} -> {record['ece']:.3f}" in row


def test_reliability_bins_pool_over_seeds_by_count():
    from clipbridge.evaluate.reporting.reliability import binned_ece, pooled_bins

    a = {"reliability": {"count": [2, 0, 1], "confidence": [0.1, None, 0.9], "accuracy": [0.5, None, 1.0]}}
    b = {"reliability": {"count": [1, 3, 0], "confidence": [0.4, 0.5, None], "accuracy": [1.0, 0.0, None]}}
    pooled = pooled_bins([a, b], "reliability")
    assert pooled["count"] == [3, 3, 1]
    assert pooled["confidence"] == pytest.approx([0.2, 0.5, 0.9])
    assert pooled["accuracy"] == pytest.approx([2 / 3, 0.0, 1.0])
    assert binned_ece(pooled) == pytest.approx((3 * abs(2 / 3 - 0.2) + 3 * 0.5 + 0.1) / 7)
    assert pooled_bins([{"method": "old record"}], "reliability") is None
