"""CMM's shared training-step product (bridge.methods.cmm.mapped_cosines) against the literal v' n(T)ᵀ."""
from __future__ import annotations

import torch

from clipbridge.bridge.methods.cmm import mapped, mapped_cosines, triplet_loss, unit


def test_mapped_cosines_and_their_gradients_equal_the_literal_product():
    g = torch.Generator().manual_seed(3)
    v = torch.nn.functional.normalize(torch.randn(2, 30, 8, generator=g, dtype=torch.float64), dim=-1)
    v[:, -4:] = 0.0                                                      # padded views
    delta = (0.3 * torch.randn(2, 8, 8, generator=g, dtype=torch.float64)).requires_grad_(True)
    protos = torch.randn(2, 5, 8, generator=g, dtype=torch.float64).requires_grad_(True)
    weights = torch.randn(2, 30, 5, generator=g, dtype=torch.float64)
    got = mapped_cosines(v, delta, protos)
    want = mapped(v, delta) @ unit(protos).transpose(1, 2)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert bool((got[:, -4:] == 0).all())
    grads = torch.autograd.grad((got * weights).sum(), (delta, protos))
    expected = torch.autograd.grad((want * weights).sum(), (delta, protos))
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_triplet_loss_from_cosines_is_the_hinge_on_cosine_distances():
    cos = torch.tensor([[[0.9, 0.2, 0.5], [0.1, 0.3, 0.8]]])
    labels = torch.tensor([0, 1])
    loss = triplet_loss(cos, labels, margin=0.2)
    # view 0: d_y = 0.1, nearest other 0.5 -> max(0, 0.2 + 0.1 - 0.5) = 0; view 1: 0.2 + 0.7 - 0.2 = 0.7
    assert torch.allclose(loss, torch.tensor([[0.0, 0.7]]))
