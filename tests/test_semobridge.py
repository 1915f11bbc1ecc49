"""SeMoBridge (training-free): text tensors, bridge maths, blend search and the registered method."""
from __future__ import annotations

import pytest
import torch
from synthetic_tasks import make_task

from clipbridge.bridge.methods.semobridge import algebra as sm
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import get_method
from clipbridge.bridge.methods.semobridge.blend_front import front_scores, validation_front
from clipbridge.bridge.text import class_text

FAST = {"search_rounds": 3, "search_per_round": 64}


def _n(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_class_text_weights_every_prompt_equally_and_averages_eos_length():
    task, _, _ = make_task(seeds=(1,), classes=3, prompts=1, dtype=torch.float64)
    # class 0 gets a second prompt: its T̄/Ē are the normalised mean of two normalised prompts
    extra_eos = task.text_eos[:1] * 3.0 + 1.0
    from dataclasses import replace
    task2 = replace(task, text_eos=torch.cat([task.text_eos, extra_eos]),
                    text_projected=torch.cat([task.text_projected, extra_eos @ task.text_projection]),
                    text_class=torch.cat([task.text_class, torch.tensor([0])]))
    t_bar, e_bar, ell = class_text(task2)
    assert torch.allclose(t_bar[0], _n(_n(task.text_projected[0]) + _n(extra_eos[0] @ task.text_projection)))
    assert torch.allclose(e_bar[0], _n(_n(task.text_eos[0]) + _n(extra_eos[0])))
    means = torch.stack([(task.text_eos[0] + extra_eos[0]) / 2, task.text_eos[1], task.text_eos[2]])
    assert ell == pytest.approx(float(means.norm(dim=-1).mean()))


@pytest.mark.parametrize("w,d", [(24, 16), (12, 20)], ids=["wide", "tall"])
def test_initial_bridge_drops_singular_values_below_the_absolute_cut(w, d):
    u, _, vh = torch.linalg.svd(torch.randn(w, d, dtype=torch.float64), full_matrices=False)
    sing = torch.linspace(0.01, 0.6, min(w, d), dtype=torch.float64)    # all below 1: a relative cut keeps all
    wt = u @ torch.diag(sing) @ vh
    b0 = sm.initial_bridge(wt)
    assert b0.shape == (d, w)
    kept = torch.linalg.svdvals(b0)
    assert int((kept > 1e-9).sum()) == int((sing >= 0.3).sum())
    assert torch.allclose(kept[kept > 1e-9].sort().values, (1 / sing[sing >= 0.3]).sort().values)


@pytest.mark.parametrize("w,d", [(24, 16), (12, 20)], ids=["wide", "tall"])
def test_fast_bridge_identities_match_the_literal_definitions_with_masks(w, d):
    task, _, _ = make_task(seeds=(1, 2), classes=4, shots=3, dim=d, width=w, missing={1: 1}, dtype=torch.float64)
    wt, text = task.text_projection, class_text(task)
    views = sm.weighted_views(task.support, task.support_mask)
    bridge = sm.initial_bridge(wt).expand(2, d, w) + 0.01 * torch.randn(2, d, w, dtype=torch.float64)
    bias = 0.1 * torch.randn(2, 4, w, dtype=torch.float64)
    xh, _ = sm.bridge_views(task.support, bridge, text.eos_length, wt, bias[:, :, None])
    m = task.support_mask[None, :, :, None].to(xh.dtype)
    literal_p = _n((xh * m).sum(2) / m.sum(2))
    assert torch.allclose(sm.bridged_prototypes(views, 4, bridge, wt, bias), literal_p)
    q = task.val.expand(2, -1, -1)
    f_bar = sm.image_prototypes(views, 4)
    literal_s3 = _n(sm.bridge_views(q, bridge, text.eos_length, wt)[0]) @ f_bar.transpose(1, 2)
    assert torch.allclose(sm.bridged_query_cosines(q, bridge, wt, f_bar), literal_s3)


def test_fixed_blend_accuracy_equals_the_accuracy_of_the_blended_logits():
    g = torch.Generator().manual_seed(0)
    maps = sm.Maps(*(torch.rand(2, 50, 7, generator=g, dtype=torch.float64) for _ in range(3)))
    div = torch.rand(2, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(-1, 7, (2, 50), generator=g)
    params = torch.tensor(sm.FIXED_BLEND, dtype=torch.float64).expand(2, 1, 7)
    expected = accuracy(sm.blend_logits(maps, div, params)[:, 0], labels)
    got = sm.FixedBlend(maps.s1, div, labels).accuracy(maps.s2, maps.s3)
    assert torch.allclose(got, expected)


def test_blend_scores_on_the_pareto_front_equal_scores_over_all_classes():
    g = torch.Generator().manual_seed(1)
    base = torch.rand(2, 300, 40, generator=g, dtype=torch.float64)
    maps = sm.Maps(*(0.6 * base + 0.4 * torch.rand(2, 300, 40, generator=g, dtype=torch.float64) for _ in range(3)))
    div = 3 * torch.rand(2, 40, generator=g, dtype=torch.float64)
    labels = torch.randint(-1, 40, (2, 300), generator=g)
    params = torch.rand(2, 50, 7, generator=g, dtype=torch.float64) * torch.tensor(sm.BLEND_HIGH, dtype=torch.float64)
    front = validation_front(maps, div, labels, dominators=4)
    assert front.scored_share < 0.5                              # the front is smaller than all classes
    acc, margin = front_scores(front, params, chunk_elements=5000)
    full = sm.blend_logits(maps, div, params)                                           # [S, M, N, C]
    assert torch.allclose(acc, accuracy(full, labels[:, None]))
    y = labels.clamp_min(0)[:, None, :, None].expand(-1, 50, -1, 1)
    true = full.gather(-1, y).squeeze(-1)
    rival = full.scatter(-1, y, float("-inf")).amax(-1)
    expected = (torch.log(true / rival) * (labels >= 0)[:, None]).sum(-1) / (labels >= 0).sum(-1, keepdim=True)
    assert torch.allclose(margin, expected)


def test_semobridge_beats_zero_shot_on_a_separable_task_and_reports_its_fit():
    task, test_x, test_y = make_task(seeds=(1, 2), classes=8, shots=4, text_noise=2.0)
    zs = get_method("zeroshot")
    zs_acc = accuracy(zs.logits(zs.fit(task), test_x), test_y)
    method = get_method("semobridge")
    state = method.fit(task, **FAST)
    logits = method.logits(state, test_x)
    assert logits.shape == (2, test_x.shape[0], 8) and logits.dtype == torch.float32
    sb_acc = accuracy(logits, test_y)
    assert bool((sb_acc > zs_acc + 5).all()), (sb_acc, zs_acc)
    assert len(state.info["val_accuracy"]) == 2 and state.info["search_seconds"] >= 0
    assert state.info["search_evaluated"] == 3 * 64 + 3
    assert set(sm.BLEND_PARAMS) <= set(state.hparams[0])


def test_semobridge_search_is_deterministic_and_works_in_float64_with_views():
    task, test_x, _ = make_task(seeds=(1, 2), classes=5, shots=2, views=2, missing={3: 1},
                                dtype=torch.float64)
    method = get_method("semobridge")
    a, b = method.fit(task, **FAST), method.fit(task, **FAST)
    assert torch.equal(a.tensors["blend"], b.tensors["blend"])
    assert method.logits(a, test_x).dtype == torch.float64
    plain = method.fit(task, views_used=1, **FAST)
    assert not torch.equal(plain.tensors["image_prototypes"], a.tensors["image_prototypes"])
    with pytest.raises(BridgeInputError):
        method.fit(task, views_used=3)


def test_semobridge_rejects_nan_inputs_and_unknown_hyper_parameters():
    task, test_x, _ = make_task(seeds=(1,), classes=3)
    from dataclasses import replace
    with pytest.raises(BridgeInputError):
        replace(task, support=task.support.clone().fill_(float("nan")))
    method = get_method("semobridge")
    with pytest.raises(BridgeInputError):
        method.fit(task, rounds=3)
    state = method.fit(task, **FAST)
    with pytest.raises(BridgeInputError):
        method.logits(state, torch.full_like(test_x, float("nan")))
