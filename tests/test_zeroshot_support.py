"""Zero-shot reads no support set (issue 20, item 9): `bench`/`fit` of zeroshot ask a cache only for what it
reads (each (shots, seed) pair's validation draw and the test split), never for the pairs' few-shot images."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cache_factory import write_cache
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.cache.reader import open_cache
from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.commands.main import bench
from clipbridge.evaluate.fitting.plan import plan_fit
from clipbridge.evaluate.fitting.scoring import fit_method
from clipbridge.evaluate.fitting.tasks import build_fit_task
from clipbridge.evaluate.reporting.records import VOLATILE_FIELDS, read_records

GRID = ["--shots", "1,2,4", "--seeds", "1,2", "--device", "cpu", "--no-progress", "--recipe", "uniform"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """The same dataset whole, sampled for (1, 1) only with the whole val split, and sampled for (1, 1) with
    its clean validation draw only."""
    root = tmp_path_factory.mktemp("zeroshot-caches")
    return {"full": write_cache(root / "full.h5", test=30),
            "sampled": write_cache(root / "sampled.h5", test=30, pairs=[(1, 1)], whole_val=True),
            "clean": write_cache(root / "clean.h5", test=30, pairs=[(1, 1)], whole_val=False)}


def _bench(cache, results, methods="zeroshot"):
    return CliRunner().invoke(bench, ["--dataset", str(cache), "--results", str(results), "--name", "grid",
                                      "--methods", methods, *GRID])


def _comparable(records):
    """{(shots, seed): record without run-varying fields and the cache's identity}."""
    return {(r["shots"], r["seed"]): {k: v for k, v in r.items() if k not in VOLATILE_FIELDS and "cache" not in k}
            for r in records}


def _zeroshot_accuracy(path) -> float:
    """Top-1 % of CLIP's zero-shot rule on the cache's test split, computed here in numpy: the normalised mean
    of each class's normalised prompts (every prompt set), cosine to the test queries."""
    cache = open_cache(path)
    text = cache.text(list(cache.text_sets))
    prompts = text.projected.numpy() / np.linalg.norm(text.projected.numpy(), axis=1, keepdims=True)
    classes = text.classes.numpy()
    prototypes = np.stack([prompts[classes == c].mean(0) for c in range(len(cache.classnames))])
    queries, labels, _ = cache.plain("test")
    scores = queries.numpy() @ (prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True)).T
    return 100.0 * float((scores.argmax(1) == labels.numpy()).mean())


def test_bench_of_zeroshot_on_a_sampled_cache_runs_and_matches_the_full_cache(tmp_path, caches):
    sampled = _bench(caches["sampled"], tmp_path / "sampled")
    assert sampled.exit_code == 0, sampled.output
    full = _bench(caches["full"], tmp_path / "full")
    assert full.exit_code == 0, full.output
    got = _comparable(read_records(tmp_path / "sampled" / "results.jsonl"))
    want = _comparable(read_records(tmp_path / "full" / "results.jsonl"))
    assert set(got) == {(k, s) for k in (1, 2, 4) for s in (1, 2)}
    assert got == want                       # same keys, test and val accuracies, calibration, views
    expected = _zeroshot_accuracy(caches["full"])
    assert all(r["test_accuracy"] == pytest.approx(expected, abs=1e-4) for r in got.values())


def test_a_method_reading_the_support_set_is_still_refused_the_missing_few_shot_images(tmp_path, caches):
    result = _bench(caches["sampled"], tmp_path, "zeroshot,tip-adapter")
    assert isinstance(result.exception, ClipBridgeError), result.output
    message = str(result.exception)
    assert "holds the images of sampled train images of shots 1 x seeds 1" in message and "\n" not in message
    assert not (tmp_path / "results.jsonl").exists()


def test_missing_validation_draws_are_refused_as_validation_images(tmp_path, caches):
    result = _bench(caches["clean"], tmp_path)
    assert isinstance(result.exception, ClipBridgeError), result.output
    message = str(result.exception)
    assert "\n" not in message
    assert message.startswith(f"cache {caches['clean']} does not hold the validation images of 1-shot seed 2, "
                              "2-shot seed 1, 2-shot seed 2, 4-shot seed 1 ... (min(K, 4) per class drawn from "
                              "its val split)")
    assert message.endswith(f"add them with: clipbridge extract --dataset fake --out {caches['clean']} "
                            "--shots 1-2,4 --seeds 1-2")
    assert "few-shot images still validates on" in message and "holds the images of" not in message
    assert not (tmp_path / "results.jsonl").exists()


def test_the_zeroshot_task_holds_no_support_and_other_methods_refuse_such_a_task(caches):
    cache = open_cache(caches["sampled"])
    plan = plan_fit(cache, "zeroshot", 4, recipe="uniform")
    task, meta = plan.task(cache, [1, 2])                     # (4, 1) and (4, 2): no support image held
    assert not plan.reads_support and not task.has_support and tuple(task.support.shape[2:]) == (0, 8)
    full_task, full_meta = build_fit_task(open_cache(caches["full"]), shots=4, seeds=[1, 2],
                                          prompt_sets=meta["prompt_sets"])
    assert {k: v for k, v in meta.items() if "cache" not in k} == {
        k: v for k, v in full_meta.items() if "cache" not in k} | plan.meta()
    assert task.views == full_task.views and task.val.equal(full_task.val) and task.val_labels.equal(
        full_task.val_labels)
    with pytest.raises(BridgeInputError, match="tip-adapter fits on the few-shot support set, but this task holds none"):
        fit_method("tip-adapter", task)
