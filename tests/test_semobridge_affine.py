"""SeMoBridge and SeMoBridge-T on an affine text projection t = e Wt + b (SigLIP):

the bridge inverts the affine map (u = (x − b) B, x̂ = ℓ n(u) Wt + b), the fast identities in homogeneous
coordinates equal the literal definitions, the hand-derived gradient equals autograd's, a zero bias is
bit-for-bit the linear method, and both methods beat zero-shot on a synthetic affine cache.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from synthetic_tasks import make_task

from clipbridge.bridge.methods.semobridge import algebra as sm
from clipbridge.bridge.methods.semobridge import loss as sl
from clipbridge.bridge.methods.semobridge.closed_form import task_affine
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import get_method
from clipbridge.bridge.text import class_text

SHORT = {"steps": 30, "warmup": 3, "lr": 2e-3, "search_rounds": 2, "search_per_round": 16}


def _n(x):
    return x / x.norm(dim=-1, keepdim=True)


def affine_task(bias_norm: float = 2.0, **kwargs):
    """make_task's task with every projected prompt moved by a projection bias b [D] of norm `bias_norm`."""
    task, test_x, test_y = make_task(**kwargs)
    g = torch.Generator().manual_seed(11)
    bias = bias_norm * _n(torch.randn(task.dim, generator=g, dtype=torch.float64)).to(task.text_projected.dtype)
    return replace(task, text_projected=task.text_projected + bias, text_projection_bias=bias), test_x, test_y


def test_the_bridge_inverts_an_affine_projection_exactly():
    task, _, _ = affine_task(dim=16, width=12, dtype=torch.float64)       # W <= D: pinv(Wt) is a left inverse
    wt, b = task.text_projection, task.text_projection_bias
    e = torch.randn(5, 12, dtype=torch.float64)
    affine = sm.affine_head(wt, b, 3.0)
    bridged, pseudo_eos = sm.bridge_views(e @ wt + b, sm.initial_bridge(wt), 3.0, wt, affine=affine)
    torch.testing.assert_close(pseudo_eos, 3.0 * _n(e))
    torch.testing.assert_close(bridged, 3.0 * _n(e) @ wt + b)
    _, linear_eos = sm.bridge_views(e @ wt + b, sm.initial_bridge(wt), 3.0, wt)
    assert not torch.allclose(linear_eos, 3.0 * _n(e), atol=1e-3)  # the linear bridge would not


@pytest.mark.parametrize("w,d", [(24, 16), (12, 20)], ids=["wide", "tall"])
def test_homogeneous_identities_equal_the_literal_definitions_with_masks(w, d):
    task, _, _ = affine_task(seeds=(1, 2), classes=4, shots=3, dim=d, width=w, missing={1: 1}, dtype=torch.float64)
    wt, text = task.text_projection, class_text(task)
    affine = task_affine(task, text)
    views = sm.weighted_views(task.support, task.support_mask)
    bridge = sm.initial_bridge(wt).expand(2, d, w) + 0.01 * torch.randn(2, d, w, dtype=torch.float64)
    bias = 0.1 * torch.randn(2, 4, w, dtype=torch.float64)
    xh, _ = sm.bridge_views(task.support, bridge, text.eos_length, wt, bias[:, :, None], affine)
    m = task.support_mask[None, :, :, None].to(xh.dtype)
    literal_p = _n((xh * m).sum(2) / m.sum(2))                               # P_c = n(mean_k x̂_k)
    torch.testing.assert_close(sm.bridged_prototypes(views, 4, bridge, wt, bias, affine), literal_p)
    q = task.val.expand(2, -1, -1)
    f_bar = sm.image_prototypes(views, 4)
    xq, _ = sm.bridge_views(q, bridge, text.eos_length, wt, affine=affine)
    maps = sm.cosine_maps(q, text.projected, f_bar, literal_p, bridge, wt, affine)
    torch.testing.assert_close(maps.s3, _n(xq) @ f_bar.transpose(1, 2))      # S3 = n(x̂(q; 0)) F̄ᵀ
    torch.testing.assert_close(maps.s2, _n(q) @ literal_p.transpose(1, 2))
    assert sm.affine_head(wt, torch.zeros(d, dtype=wt.dtype), 3.0) is None   # b = 0: the linear code


def _literal_losses(support, mask, bridge, bias, text, wt, b, tau):
    """METHOD.md §3 written out with the affine bridge, for autograd (support [S, C, K, D], mask [C, K])."""
    s, c, k, _ = support.shape
    u = torch.einsum("sckd,sdw->sckw", support - b, bridge) + bias[:, :, None]
    pseudo = text.eos_length * _n(u)
    bridged = pseudo @ wt + b
    m = mask.to(support.dtype)[None, :, :, None]
    protos, unit_eos = _n((bridged * m).sum(2) / m.sum(2)), _n((pseudo * m).sum(2) / m.sum(2))
    real = mask.reshape(-1)
    labels = torch.arange(c).repeat_interleave(k)[real]
    classes = torch.arange(c)
    ce = lambda logits, y: torch.stack([F.cross_entropy(row, y) for row in logits])  # noqa: E731
    flat = lambda x: x.reshape(s, c * k, -1)[:, real]                                # noqa: E731
    norms = bias.norm(dim=-1)
    losses = {"img": ce(tau * _n(flat(support)) @ protos.transpose(1, 2), labels),
              "txtp": ce(protos @ text.projected.T, classes),
              "txte": ce(unit_eos @ text.eos.T, classes),
              "cons": ce(_n(flat(bridged)) @ protos.transpose(1, 2), labels),
              "bias": ((norms - norms.mean(-1, keepdim=True)) ** 2).mean(-1)}
    losses["total"] = sum(sl.LOSS_WEIGHTS[name] * value for name, value in losses.items())
    return losses


def test_the_hand_derived_gradient_with_a_projection_bias_equals_autograd():
    task, _, _ = affine_task(seeds=(1, 2), classes=5, shots=3, views=2, dim=12, width=16, missing={2: 1},
                             dtype=torch.float64)
    wt, b, text = task.text_projection, task.text_projection_bias, class_text(task)
    g = torch.Generator().manual_seed(3)
    start = sm.initial_bridge(wt).expand(2, 12, 16) + 0.05 * torch.randn(2, 12, 16, generator=g, dtype=torch.float64)
    start_bias = 0.2 * torch.randn(2, 5, 16, generator=g, dtype=torch.float64)
    views = sm.weighted_views(task.support, task.support_mask)

    hand_b, hand_c = start.clone().requires_grad_(True), start_bias.clone().requires_grad_(True)
    hand = sl.trained_losses(views, hand_b, hand_c, text.projected, text.eos, wt, wt @ wt.T, 100.0,
                             task_affine(task, text))
    hand.losses["total"].sum().backward()
    ref_b, ref_c = start.clone().requires_grad_(True), start_bias.clone().requires_grad_(True)
    reference = _literal_losses(task.support, task.support_mask, ref_b, ref_c, text, wt, b, 100.0)
    reference["total"].sum().backward()

    for name, value in reference.items():
        torch.testing.assert_close(hand.losses[name], value.detach(), rtol=1e-10, atol=1e-12, msg=name)
    torch.testing.assert_close(hand_b.grad, ref_b.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(hand_c.grad, ref_c.grad, rtol=1e-9, atol=1e-12)
    literal_protos = _n((sm.bridge_views(task.support, start, text.eos_length, wt, start_bias[:, :, None],
                                         task_affine(task, text))[0] * task.support_mask[None, :, :, None]).sum(2))
    torch.testing.assert_close(hand.prototypes, literal_protos)


@pytest.mark.parametrize("name", ["semobridge", "semobridge-t"])
def test_a_zero_projection_bias_is_bit_for_bit_the_linear_method(name):
    task, test_x, _ = make_task(seeds=(1, 2), classes=5, missing={3: 2})
    method = get_method(name)
    hp = SHORT if name == "semobridge-t" else {k: SHORT[k] for k in ("search_rounds", "search_per_round")}
    linear = method.fit(task, **hp)
    zero = method.fit(replace(task, text_projection_bias=torch.zeros(task.dim)), **hp)
    assert linear.tensors.keys() == zero.tensors.keys() and "projection_bias" not in zero.tensors
    for key, value in linear.tensors.items():
        assert torch.equal(value, zero.tensors[key]), key
    assert torch.equal(method.logits(linear, test_x), method.logits(zero, test_x))


def test_semobridge_t_selection_scores_states_as_the_fitted_affine_state_does():
    task, _, _ = affine_task(seeds=(1, 2, 3), classes=6, shots=3, dim=12, width=16, missing={4: 1},
                             dtype=torch.float64)
    state = get_method("semobridge-t").fit(task, **SHORT)
    t = state.tensors
    assert t["projection_bias"].shape == (12,) and float(t["eos_length"]) == pytest.approx(class_text(task).eos_length)
    affine = sm.affine_head(t["text_projection"], t["projection_bias"], float(t["eos_length"]))
    maps = sm.cosine_maps(task.val.expand(3, -1, -1), t["text_prototypes"], t["image_prototypes"],
                          t["bridged_prototypes"], t["bridge"], t["text_projection"], affine)
    fixed = torch.tensor(sm.FIXED_BLEND, dtype=torch.float64).expand(3, 1, 7)
    expected = accuracy(sm.blend_logits(maps, t["divergence"], fixed)[:, 0], task.val_labels)
    assert state.info["selection_val_accuracy"] == pytest.approx(expected.tolist())


def test_semobridge_and_semobridge_t_beat_zero_shot_on_a_synthetic_affine_cache(tmp_path):
    from clipbridge.cache.reader import open_cache
    from clipbridge.cache.synthetic import write_synthetic_cache
    from clipbridge.evaluate.fitting.scoring import fit_method, score_queries
    from clipbridge.evaluate.fitting.tasks import build_fit_task, load_test

    path = write_synthetic_cache(tmp_path / "affine.h5", classes=10, train_per_class=4, dim=32, width=24, val=40,
                                 test=200, seed=0, projection_bias=5.0)
    cache = open_cache(path)
    assert float(cache.text_projection_bias.norm()) == pytest.approx(5.0, rel=1e-5)
    task, _ = build_fit_task(cache, shots=4, seeds=(1, 2))
    assert torch.equal(task.text_projection_bias, cache.text_projection_bias)
    queries, labels = load_test(cache)
    zeroshot = score_queries(fit_method("zeroshot", task), queries, labels)
    for name, hp in (("semobridge", {}), ("semobridge-t", {"steps": 150, "warmup": 15})):
        state = fit_method(name, task, hp)
        assert "projection_bias" in state.tensors
        accuracy_ = score_queries(state, queries, labels)
        assert min(accuracy_) > max(zeroshot) + 10, (name, accuracy_, zeroshot)
