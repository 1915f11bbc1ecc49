"""Every view family reads back its own views, in both cache format versions, through the reader and through
the fitting task (a family read as another, e.g. format 2's `flip` as `plain`, must fail here, fast).

Format 2 (written by CacheWriter): each built-in family of extract/views.py stores values that are a known
function of (split, image, family, copy) (tests/cache_factory.py). Format 1: the one [N, V, D] block of
clipbridge 0.1, read as plain (view 0), flip (view 1) and legacy-crops (views 2 ..).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cache_factory import expected_view, interleaved_labels, write_cache
from clipbridge.cache.reader import open_cache
from coop_reference import coop_draw

# The built-in families (extract/views.py) with the copies stored here (fewer than 10 to stay small; 6 for
# semo-r0.8-j so that the "first 5 copies" spec of SeMoBridge's DTD 16-shot recipe can be read).
FAMILIES = {"flip": 1, "tip": 3, "semo-r0.5-j": 2, "semo-r0.5": 2, "semo-r0.8-j": 6, "semo-r0.8": 2, "coop-rrc": 3,
            "gda-imagenet": 2}
TRAIN = (5, 5, 5)


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return open_cache(write_cache(tmp_path_factory.mktemp("families") / "v2.h5", train_counts=TRAIN,
                                  families=FAMILIES))


def test_the_list_is_every_builtin_family():
    from clipbridge.extract.views import BUILTIN_FAMILIES

    assert set(BUILTIN_FAMILIES) == {"plain", *FAMILIES}


@pytest.mark.parametrize("family", ["plain", *FAMILIES])
def test_format_2_reads_each_family_s_own_views(v2, family):
    assert v2.version == 2
    info = v2.family("train", family)
    copies = 1 if family == "plain" else FAMILIES[family]
    assert info.copies == copies
    rows = np.array([4, 0, 7, 4])[np.isin([4, 0, 7, 4], info.rows)]          # any order, repeats
    got = v2.views("train", family, rows)
    source = v2.rows("train").source
    for i, row in enumerate(rows):
        for copy in range(copies):
            assert torch.equal(got[i, copy], torch.from_numpy(expected_view("train", int(source[row]), family, copy)))
    if family != "plain":                                                    # and not the plain view
        plain = v2.views("train", "plain", rows)[:, 0]
        assert not torch.equal(got[:, 0], plain)


@pytest.mark.parametrize("spec", ["flip", "tip", "semo-r0.8-j:5", "coop-rrc"])
def test_the_fitting_task_takes_each_family_s_views_shot_by_shot(v2, spec):
    from clipbridge.evaluate.fitting.tasks import build_fit_task

    name, _, count = spec.partition(":")
    copies = int(count) if count else FAMILIES[name]
    task, meta = build_fit_task(v2, shots=2, seeds=[3], families=("plain", spec))
    assert task.views == 1 + copies
    labels = interleaved_labels(TRAIN).tolist()
    support, _ = coop_draw(labels, (np.arange(12) % 3).tolist(), 2, 3)
    for c in range(3):
        for k, row in enumerate(r for r in support if labels[r] == c):
            base = k * task.views
            assert torch.equal(task.support[0, c, base], torch.from_numpy(expected_view("train", row, "plain", 0)))
            for copy in range(copies):
                assert torch.equal(task.support[0, c, base + 1 + copy],
                                   torch.from_numpy(expected_view("train", row, name, copy))), (spec, c, k, copy)


def test_format_1_reads_plain_flip_and_legacy_crops_through_the_fitting_task(tmp_path):
    from clipbridge.evaluate.fitting.tasks import build_fit_task
    from test_cache_roundtrip import write_version1_cache

    rng = np.random.default_rng(1)
    labels = interleaved_labels((4, 4, 4))
    embedding = rng.standard_normal((labels.size, 5, 4)).astype(np.float16).astype(np.float32)
    cache = open_cache(write_version1_cache(tmp_path / "v1.h5", embedding, labels, np.zeros(labels.size, bool)))
    assert cache.version == 1
    task, _ = build_fit_task(cache, shots=2, seeds=[1], families=("plain", "flip", "legacy-crops"),
                             protocol="paper")
    assert task.views == 5
    support, _ = coop_draw(labels.tolist(), [], 2, 1)
    for c in range(3):
        for k, row in enumerate(r for r in support if labels[r] == c):
            torch.testing.assert_close(task.support[0, c, 5 * k:5 * k + 5], torch.from_numpy(embedding[row]),
                                       rtol=0, atol=0)
